// SPDX-License-Identifier: GPL-2.0
/* The flow table socket_lb.c keeps and rebalance.c reads through its
 * pin: one definition, so the two programs cannot drift apart (a map
 * reused by pin must match in key, value and flags).
 */
#ifndef RVS_FLOW_H
#define RVS_FLOW_H

#define FLOW_REV 0 /* key: backend address; value: the virtual address */
#define FLOW_FWD 1 /* key: virtual address; value: the backend (UDP) */

struct flow_key {
	__u64 cookie;
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 kind;
	__u32 pad;
};

struct flow_val {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
	__u32 svc;
	__u32 backend;
	__u32 gen;
};

/* The loader sets max_entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 1);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rvs_flow SEC(".maps");

#endif
