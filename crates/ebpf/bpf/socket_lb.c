// SPDX-License-Identifier: GPL-2.0
//
// rvs socket-level load balancer: cgroup sock_addr programs.
//
// A connect() (TCP, connected UDP) or an unconnected UDP sendmsg() to a
// virtual service has its destination rewritten to one real server; the
// reverse translation (recvmsg, getpeername) makes the application see
// the virtual address. Userspace (crates/ebpf/src/plan.rs) computes every
// selection table; this side only looks up and counts. The byte layouts
// are mirrored in crates/ebpf/src/layout.rs: change both together.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "flow.h"

#define ECONNREFUSED 111

#define SCHED_RR 1
#define SCHED_WRR 2
#define SCHED_SH 3
#define SCHED_MH 4

#define SVC_F_SCHED1 0x0008 /* mh-fallback */
#define SVC_F_SCHED2 0x0010 /* sh-port, mh-port */

#define NO_BACKEND 0xffffffffu

/* The Maglev key of ip_vs_mh.c (generate_hash_secret). */
#define MH_KEY1 2654435761ULL

struct svc_key {
	__u32 addr[4]; /* network order; IPv4 in addr[0] */
	__u16 port;    /* network order */
	__u8 proto;    /* IPPROTO_* */
	__u8 family;   /* 4 or 6 */
};

struct svc_val {
	__u32 id;
	__u32 count;   /* slots in the selection table */
	__u8 sched;
	__u8 pad[3];
	__u32 flags;   /* IP_VS_SVC_F_* */
	__u32 timeout; /* persistence (ClientIP affinity) in seconds; 0 = none */
	__u32 reserved;
};

struct slot_key {
	__u32 svc;
	__u32 slot;
};

struct be_val {
	__u32 addr[4];
	__u16 port;
	__u8 family; /* 0 = free */
	__u8 pad;
	__u32 svc;
	__s32 weight;
	__u32 gen;
	__s32 last_weight;
	__u32 order;
};

struct stats {
	__u64 conns;
	__u64 inpkts;
	__u64 outpkts;
	__u64 inbytes;
	__u64 outbytes;
};

struct aff_key {
	__u32 svc;
	__u32 pad;
	__u32 client[4];
	__u64 netns;
};

struct aff_val {
	__u32 backend;
	__u32 gen;
	__u64 last_ns;
};

/* Sizes are placeholders: the loader sets every max_entries. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rvs_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct slot_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rvs_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct be_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rvs_be SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rvs_rr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rvs_svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rvs_be_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU); /* per-CPU LRU lists: no global lock */
	__uint(max_entries, 1);
	__type(key, struct aff_key);
	__type(value, struct aff_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rvs_aff SEC(".maps");

/* ---- the kernel's hashes (lib/siphash.c, include/linux/hash.h) ---- */

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
	do {                                                                   \
		v0 += v1;                                                      \
		v1 = ROTL64(v1, 13);                                           \
		v1 ^= v0;                                                      \
		v0 = ROTL64(v0, 32);                                           \
		v2 += v3;                                                      \
		v3 = ROTL64(v3, 16);                                           \
		v3 ^= v2;                                                      \
		v0 += v3;                                                      \
		v3 = ROTL64(v3, 21);                                           \
		v3 ^= v0;                                                      \
		v2 += v1;                                                      \
		v1 = ROTL64(v1, 17);                                           \
		v1 ^= v2;                                                      \
		v2 = ROTL64(v2, 32);                                           \
	} while (0)

/* hsiphash(&v, 4, key) on a 64-bit kernel: SipHash-1-3. */
static __always_inline __u32 hsiphash_u32(__u32 v, __u64 key)
{
	__u64 v0 = 0x736f6d6570736575ULL ^ key;
	__u64 v1 = 0x646f72616e646f6dULL ^ key;
	__u64 v2 = 0x6c7967656e657261ULL ^ key;
	__u64 v3 = 0x7465646279746573ULL ^ key;
	__u64 b = (4ULL << 56) | v;

	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return (__u32)((v0 ^ v1) ^ (v2 ^ v3));
}

static __always_inline __u32 hash_32(__u32 val, __u32 bits)
{
	return (val * 0x61C88647u) >> (32 - bits);
}

/* ---- who the client is at the socket layer ---- */

struct client {
	__u32 addr[4]; /* the bound source address, or zero */
	__u64 netns;   /* the netns cookie when no source address is bound */
	__u32 fold;    /* ntohl(addr_fold) of the address, or the folded cookie */
	__u32 port;    /* bound source port (host order), or the socket cookie's low 16 bits */
};

static __always_inline void client_of(struct bpf_sock_addr *ctx, struct client *cl)
{
	struct bpf_sock *sk = ctx->sk;
	__u32 port = 0;
	int bound = 0;

	cl->addr[0] = cl->addr[1] = cl->addr[2] = cl->addr[3] = 0;
	cl->netns = 0;
	if (sk) {
		port = sk->src_port;
		if (ctx->family == 2 /* AF_INET */) {
			cl->addr[0] = sk->src_ip4;
			bound = cl->addr[0] != 0;
		} else {
			cl->addr[0] = sk->src_ip6[0];
			cl->addr[1] = sk->src_ip6[1];
			cl->addr[2] = sk->src_ip6[2];
			cl->addr[3] = sk->src_ip6[3];
			bound = (cl->addr[0] | cl->addr[1] | cl->addr[2] | cl->addr[3]) != 0;
		}
	}
	if (bound) {
		if (ctx->family == 2)
			cl->fold = bpf_ntohl(cl->addr[0]);
		else
			cl->fold = bpf_ntohl(cl->addr[0]) ^ bpf_ntohl(cl->addr[1]) ^
				   bpf_ntohl(cl->addr[2]) ^ bpf_ntohl(cl->addr[3]);
	} else {
		cl->netns = bpf_get_netns_cookie(ctx);
		cl->fold = (__u32)cl->netns ^ (__u32)(cl->netns >> 32);
	}
	if (!port)
		port = (__u16)bpf_get_socket_cookie(ctx);
	cl->port = port & 0xffff;
}

/* ---- selection ---- */

static __always_inline struct be_val *backend(__u32 id)
{
	struct be_val *be = bpf_map_lookup_elem(&rvs_be, &id);

	if (!be || !be->family)
		return 0;
	return be;
}

static __always_inline __u32 slot_backend(__u32 svc, __u32 slot)
{
	struct slot_key k = { .svc = svc, .slot = slot };
	__u32 *id = bpf_map_lookup_elem(&rvs_slot, &k);

	return id ? *id : NO_BACKEND;
}

struct mh_probe {
	__u32 svc;
	__u32 size;
	__u32 ihash;
	__u32 base; /* port + fold */
	__u32 found;
};

static long mh_probe_one(__u64 i, void *data)
{
	struct mh_probe *p = data;
	__u32 roffset, slot, id;
	struct be_val *be;

	if (!p->size)
		return 1;
	roffset = (__u32)((i + p->ihash) % p->size);
	slot = hsiphash_u32(roffset + p->base, MH_KEY1) % p->size;
	id = slot_backend(p->svc, slot);
	if (id == NO_BACKEND)
		return 1; /* an empty table */
	be = backend(id);
	if (be && be->weight > 0) {
		p->found = id;
		return 1;
	}
	return 0;
}

/* The real server for a new connection, or NO_BACKEND. */
static __always_inline __u32 schedule(struct svc_val *svc, struct client *cl)
{
	__u32 id = NO_BACKEND;
	struct be_val *be;

	if (!svc->count)
		return NO_BACKEND;
	switch (svc->sched) {
	case SCHED_RR:
	case SCHED_WRR: {
		/* The table holds the servers of weight > 0 (rr) or one
		 * cycle of the kernel's wrr sequence (wrr). */
		__u32 key = svc->id;
		__u64 *ctr = bpf_map_lookup_elem(&rvs_rr, &key);
		__u64 n;

		if (!ctr)
			return NO_BACKEND;
		n = __sync_fetch_and_add(ctr, 1);
		return slot_backend(svc->id, (__u32)(n % svc->count));
	}
	case SCHED_SH: {
		/* 256 buckets, fallback already resolved in userspace. */
		__u32 port = (svc->flags & SVC_F_SCHED2) ? cl->port : 0;

		return slot_backend(svc->id, hash_32(port + cl->fold, 8));
	}
	case SCHED_MH: {
		__u32 port = (svc->flags & SVC_F_SCHED2) ? cl->port : 0;
		__u32 size = svc->count;
		struct mh_probe p;

		p.ihash = hsiphash_u32(port + cl->fold, MH_KEY1) % size;
		id = slot_backend(svc->id, p.ihash);
		if (id == NO_BACKEND)
			return NO_BACKEND;
		be = backend(id);
		if (be && be->weight > 0)
			return id;
		if (!(svc->flags & SVC_F_SCHED1))
			return NO_BACKEND;
		p.svc = svc->id;
		p.size = size;
		p.base = port + cl->fold;
		p.found = NO_BACKEND;
		bpf_loop(size, mh_probe_one, &p, 0);
		return p.found;
	}
	}
	return NO_BACKEND;
}

/* The backend for this client, honouring ClientIP affinity. Who the
 * client is is worked out only when something needs it (not for rr/wrr
 * without affinity: two helper calls saved per connection). */
static __always_inline __u32 pick(struct bpf_sock_addr *ctx, struct svc_val *svc, __u32 *gen)
{
	struct aff_key ak = {};
	struct client cl_store = {};
	struct client *cl = &cl_store;
	struct aff_val *av;
	struct be_val *be;
	__u64 now = 0;
	__u32 id;

	if (svc->timeout || svc->sched == SCHED_SH || svc->sched == SCHED_MH)
		client_of(ctx, cl);
	if (svc->timeout) {
		now = bpf_ktime_get_ns();
		ak.svc = svc->id;
		ak.client[0] = cl->addr[0];
		ak.client[1] = cl->addr[1];
		ak.client[2] = cl->addr[2];
		ak.client[3] = cl->addr[3];
		ak.netns = cl->netns;
		av = bpf_map_lookup_elem(&rvs_aff, &ak);
		if (av && now - av->last_ns < (__u64)svc->timeout * 1000000000ULL) {
			be = backend(av->backend);
			/* kube-proxy sets expire_quiescent_template: an
			 * affinity to a weight-0 server ends. */
			if (be && be->gen == av->gen && be->svc == svc->id && be->weight > 0) {
				av->last_ns = now;
				*gen = be->gen;
				return av->backend;
			}
		}
	}
	id = schedule(svc, cl);
	if (id == NO_BACKEND)
		return NO_BACKEND;
	be = backend(id);
	if (!be || be->svc != svc->id)
		return NO_BACKEND;
	*gen = be->gen;
	if (svc->timeout) {
		struct aff_val nv = { .backend = id, .gen = be->gen, .last_ns = now };

		bpf_map_update_elem(&rvs_aff, &ak, &nv, BPF_ANY);
	}
	return id;
}

static __always_inline void count(__u32 svc, __u32 be, __u64 conns, __u64 inpkts, __u64 outpkts)
{
	struct stats *s = bpf_map_lookup_elem(&rvs_svc_stats, &svc);

	if (s) {
		s->conns += conns;
		s->inpkts += inpkts;
		s->outpkts += outpkts;
	}
	s = bpf_map_lookup_elem(&rvs_be_stats, &be);
	if (s) {
		s->conns += conns;
		s->inpkts += inpkts;
		s->outpkts += outpkts;
	}
}

/* ---- addresses in and out of the context ---- */

/* Reads the destination; 6 with a v4-mapped address reads as 4. */
static __always_inline int read_dst(struct bpf_sock_addr *ctx, int family, struct svc_key *k)
{
	k->port = (__u16)ctx->user_port;
	k->proto = (__u8)ctx->protocol;
	if (family == 4) {
		k->addr[0] = ctx->user_ip4;
		k->addr[1] = k->addr[2] = k->addr[3] = 0;
		k->family = 4;
		return 4;
	}
	k->addr[0] = ctx->user_ip6[0];
	k->addr[1] = ctx->user_ip6[1];
	k->addr[2] = ctx->user_ip6[2];
	k->addr[3] = ctx->user_ip6[3];
	if (k->addr[0] == 0 && k->addr[1] == 0 && k->addr[2] == bpf_htonl(0xffff)) {
		k->addr[0] = k->addr[3];
		k->addr[1] = k->addr[2] = k->addr[3] = 0;
		k->family = 4;
		return 46; /* v4-mapped in a v6 socket */
	}
	k->family = 6;
	return 6;
}

static __always_inline void write_dst(struct bpf_sock_addr *ctx, int how, __u32 *addr, __u16 port)
{
	if (how == 4) {
		ctx->user_ip4 = addr[0];
	} else if (how == 46) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = addr[0];
	} else {
		ctx->user_ip6[0] = addr[0];
		ctx->user_ip6[1] = addr[1];
		ctx->user_ip6[2] = addr[2];
		ctx->user_ip6[3] = addr[3];
	}
	ctx->user_port = port;
}

static __always_inline void remember(__u64 cookie, struct be_val *be, __u32 id, __u32 gen,
				     struct svc_key *vip, __u32 svc)
{
	struct flow_key fk = {};
	struct flow_val fv = {};

	fk.cookie = cookie;
	fk.addr[0] = be->addr[0];
	fk.addr[1] = be->addr[1];
	fk.addr[2] = be->addr[2];
	fk.addr[3] = be->addr[3];
	fk.port = be->port;
	fk.family = be->family;
	fk.kind = FLOW_REV;
	fv.addr[0] = vip->addr[0];
	fv.addr[1] = vip->addr[1];
	fv.addr[2] = vip->addr[2];
	fv.addr[3] = vip->addr[3];
	fv.port = vip->port;
	fv.family = vip->family;
	fv.svc = svc;
	fv.backend = id;
	fv.gen = gen;
	bpf_map_update_elem(&rvs_flow, &fk, &fv, BPF_ANY);
}

/* connect(): TCP and connected UDP. */
static __always_inline int do_connect(struct bpf_sock_addr *ctx, int family)
{
	struct svc_key k;
	struct svc_val *svc;
	struct be_val *be;
	__u32 id, gen = 0;
	int how;

	how = read_dst(ctx, family, &k);
	svc = bpf_map_lookup_elem(&rvs_svc, &k);
	if (!svc)
		return 1;
	id = pick(ctx, svc, &gen);
	be = id == NO_BACKEND ? 0 : backend(id);
	if (!be || be->family != k.family) {
		/* IPVS answers a service without a usable real server with
		 * an ICMP port unreachable: connection refused. */
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	remember(bpf_get_socket_cookie(ctx), be, id, gen, &k, svc->id);
	write_dst(ctx, how, be->addr, be->port);
	count(svc->id, id, 1, 0, 0);
	return 1;
}

/* Unconnected UDP sendmsg(): a flow per socket and virtual address, as
 * IPVS keeps a connection entry per client address and port. */
static __always_inline int do_sendmsg(struct bpf_sock_addr *ctx, int family)
{
	struct flow_key fk = {};
	struct flow_val *fv;
	struct svc_key k;
	struct svc_val *svc;
	struct be_val *be = 0;
	__u64 cookie, conns = 0;
	__u32 id = NO_BACKEND, gen = 0;
	int how;

	how = read_dst(ctx, family, &k);
	svc = bpf_map_lookup_elem(&rvs_svc, &k);
	if (!svc)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	fk.cookie = cookie;
	fk.addr[0] = k.addr[0];
	fk.addr[1] = k.addr[1];
	fk.addr[2] = k.addr[2];
	fk.addr[3] = k.addr[3];
	fk.port = k.port;
	fk.family = k.family;
	fk.kind = FLOW_FWD;
	fv = bpf_map_lookup_elem(&rvs_flow, &fk);
	if (fv && fv->svc == svc->id) {
		/* An existing flow stays on its server while the server
		 * exists, even at weight 0, as an IPVS connection does. */
		be = backend(fv->backend);
		if (be && be->gen == fv->gen && be->svc == svc->id) {
			id = fv->backend;
			gen = be->gen;
		} else {
			be = 0;
		}
	}
	if (!be) {
		id = pick(ctx, svc, &gen);
		be = id == NO_BACKEND ? 0 : backend(id);
		if (!be || be->family != k.family) {
			bpf_set_retval(-ECONNREFUSED);
			return 0;
		}
		struct flow_val nv = {};

		nv.addr[0] = be->addr[0];
		nv.addr[1] = be->addr[1];
		nv.addr[2] = be->addr[2];
		nv.addr[3] = be->addr[3];
		nv.port = be->port;
		nv.family = be->family;
		nv.svc = svc->id;
		nv.backend = id;
		nv.gen = gen;
		bpf_map_update_elem(&rvs_flow, &fk, &nv, BPF_ANY);
		conns = 1;
	}
	remember(cookie, be, id, gen, &k, svc->id);
	write_dst(ctx, how, be->addr, be->port);
	count(svc->id, id, conns, 1, 0);
	return 1;
}

/* recvmsg() and getpeername(): the backend's address becomes the
 * virtual one again. */
static __always_inline int do_reverse(struct bpf_sock_addr *ctx, int family, int is_recv)
{
	struct flow_key fk = {};
	struct flow_val *fv;
	struct svc_key k;
	int how;

	how = read_dst(ctx, family, &k);
	fk.cookie = bpf_get_socket_cookie(ctx);
	fk.addr[0] = k.addr[0];
	fk.addr[1] = k.addr[1];
	fk.addr[2] = k.addr[2];
	fk.addr[3] = k.addr[3];
	fk.port = k.port;
	fk.family = k.family;
	fk.kind = FLOW_REV;
	fv = bpf_map_lookup_elem(&rvs_flow, &fk);
	if (!fv)
		return 1;
	write_dst(ctx, how, fv->addr, fv->port);
	if (is_recv)
		count(fv->svc, fv->backend, 0, 0, 1);
	return 1;
}

SEC("cgroup/connect4")
int rvs_connect4(struct bpf_sock_addr *ctx)
{
	return do_connect(ctx, 4);
}

SEC("cgroup/connect6")
int rvs_connect6(struct bpf_sock_addr *ctx)
{
	return do_connect(ctx, 6);
}

SEC("cgroup/sendmsg4")
int rvs_sendmsg4(struct bpf_sock_addr *ctx)
{
	return do_sendmsg(ctx, 4);
}

SEC("cgroup/sendmsg6")
int rvs_sendmsg6(struct bpf_sock_addr *ctx)
{
	return do_sendmsg(ctx, 6);
}

SEC("cgroup/recvmsg4")
int rvs_recvmsg4(struct bpf_sock_addr *ctx)
{
	return do_reverse(ctx, 4, 1);
}

SEC("cgroup/recvmsg6")
int rvs_recvmsg6(struct bpf_sock_addr *ctx)
{
	return do_reverse(ctx, 6, 1);
}

SEC("cgroup/getpeername4")
int rvs_getpeername4(struct bpf_sock_addr *ctx)
{
	return do_reverse(ctx, 4, 0);
}

SEC("cgroup/getpeername6")
int rvs_getpeername6(struct bpf_sock_addr *ctx)
{
	return do_reverse(ctx, 6, 0);
}

char LICENSE[] SEC("license") = "GPL";
