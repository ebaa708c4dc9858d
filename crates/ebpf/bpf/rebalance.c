// SPDX-License-Identifier: GPL-2.0
//
// rvs rebalancing: which balanced TCP sockets are idle, and closing them.
//
// Loaded beside socket_lb.c only when some service's rebalancing policy
// is on (crates/ebpf/src/rebalance.rs). It shares socket_lb.c's pinned
// rvs_flow map, which says which real server each balanced socket was
// sent to. The byte layouts are mirrored in crates/ebpf/src/rebalance.rs:
// change both together.
//
// * rvs_rb_egress / rvs_rb_ingress (cgroup_skb, the same cgroup): for a
//   watched socket, count payload bytes each way and remember which way
//   the last ones went. Unwatched sockets cost one hash lookup a packet.
// * rvs_rb_report (iter/tcp): one record per established socket that has
//   a translation in rvs_flow: its real server, its counters, and the
//   bytes still queued (unsent, unacknowledged or unread).
// * rvs_rb_destroy (iter/tcp, Linux >= 6.5): closes each socket named in
//   rvs_rb_doomed with bpf_sock_destroy() if, with its lock held, it is
//   still as userspace last saw it: counters unchanged, nothing queued,
//   and the real server had the last word.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "flow.h" /* socket_lb.c's flow table, shared through its pin */

#define TCP_ESTABLISHED 1
#define AF_INET 2
#define AF_INET6 10

#define RB_LAST_NONE 0
#define RB_LAST_OUT 1 /* the client (this socket) sent last */
#define RB_LAST_IN 2  /* the real server sent last */

/* The marker userspace replaces with bpf_sock_destroy's BTF id in the
 * running kernel (aya 0.14 does not resolve kfuncs). */
#define KFUNC_MARKER ".long 0x5eedde57"

/* ---- the kernel's types, as far as they are read (CO-RE) ---- */

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct tcp_sock {
	__u32 rcv_nxt;
	__u32 copied_seq;
	__u32 snd_una;
	__u32 write_seq;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
} __attribute__((preserve_access_index));

/* ---- maps ---- */

struct rb_watch {
	__u64 out_bytes;
	__u64 in_bytes;
	__u32 last; /* RB_LAST_* */
	__u32 pad;
};

/* Socket cookie -> its counters, for the sockets userspace watches. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, struct rb_watch);
} rvs_rb_watch SEC(".maps");

struct rb_doom {
	__u64 out_bytes;
	__u64 in_bytes;
};

/* Socket cookie -> the counters userspace saw when it chose to close it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, struct rb_doom);
} rvs_rb_doomed SEC(".maps");

struct rb_report {
	__u64 cookie;
	__u64 out_bytes;
	__u64 in_bytes;
	__u32 svc;
	__u32 backend;
	__u32 gen;
	__u32 queued; /* unsent + unacknowledged + unread bytes */
	__u32 last;   /* RB_LAST_*; RB_LAST_NONE when not watched */
	__u32 watched;
};

struct rb_result {
	__u64 cookie;
	__s32 err; /* bpf_sock_destroy()'s result */
	__u32 pad;
};

/* ---- counting payload at the cgroup ---- */

static __always_inline void track(struct __sk_buff *skb, int in)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct rb_watch *w = bpf_map_lookup_elem(&rvs_rb_watch, &cookie);
	struct bpf_tcp_sock *tp;
	struct bpf_sock *sk;
	__u32 hdr, seq, len;
	__u8 b;

	if (!w)
		return;
	if (skb->protocol == bpf_htons(0x0800)) {
		if (bpf_skb_load_bytes(skb, 9, &b, 1) || b != 6 /* TCP */)
			return;
		if (bpf_skb_load_bytes(skb, 0, &b, 1))
			return;
		hdr = (b & 0xf) * 4;
	} else if (skb->protocol == bpf_htons(0x86DD)) {
		if (bpf_skb_load_bytes(skb, 6, &b, 1) || b != 6)
			return;
		hdr = 40;
	} else {
		return;
	}
	if (hdr > 60 || bpf_skb_load_bytes(skb, hdr + 12, &b, 1))
		return;
	if (bpf_skb_load_bytes(skb, hdr + 4, &seq, 4))
		return;
	hdr += (b >> 4) * 4;
	if (skb->len <= hdr)
		return; /* no payload: an ACK, a SYN, a FIN */
	len = skb->len - hdr;
	if (in) {
		__sync_fetch_and_add(&w->in_bytes, len);
		/* Only new data is the real server speaking: a retransmitted
		 * or probing segment (all before rcv_nxt, which this segment
		 * has not advanced yet) is not. */
		sk = skb->sk;
		if (sk)
			sk = bpf_sk_fullsock(sk);
		tp = sk ? bpf_tcp_sock(sk) : 0;
		if (!tp || (__s32)(bpf_ntohl(seq) + len - tp->rcv_nxt) <= 0)
			return;
	} else {
		__sync_fetch_and_add(&w->out_bytes, len);
	}
	w->last = in ? RB_LAST_IN : RB_LAST_OUT;
}

SEC("cgroup_skb/egress")
int rvs_rb_egress(struct __sk_buff *skb)
{
	track(skb, 0);
	return 1;
}

SEC("cgroup_skb/ingress")
int rvs_rb_ingress(struct __sk_buff *skb)
{
	track(skb, 1);
	return 1;
}

/* ---- the sockets ---- */

struct seen {
	__u64 cookie;
	struct flow_val *flow;
	struct tcp_sock *tp;
};

/* An established, balanced socket: its cookie, translation and TCP state. */
static __always_inline int balanced(struct sock_common *sk, struct seen *s)
{
	struct flow_key fk = {};

	if (!sk || sk->skc_state != TCP_ESTABLISHED)
		return 0;
	s->tp = bpf_skc_to_tcp_sock(sk);
	if (!s->tp)
		return 0;
	if (sk->skc_family == AF_INET) {
		fk.addr[0] = sk->skc_daddr;
		fk.family = 4;
	} else if (sk->skc_family == AF_INET6) {
		__u32 a0 = sk->skc_v6_daddr.in6_u.u6_addr32[0];
		__u32 a1 = sk->skc_v6_daddr.in6_u.u6_addr32[1];
		__u32 a2 = sk->skc_v6_daddr.in6_u.u6_addr32[2];
		__u32 a3 = sk->skc_v6_daddr.in6_u.u6_addr32[3];

		if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) {
			fk.addr[0] = a3; /* v4-mapped: the IPv4 service's */
			fk.family = 4;
		} else {
			fk.addr[0] = a0;
			fk.addr[1] = a1;
			fk.addr[2] = a2;
			fk.addr[3] = a3;
			fk.family = 6;
		}
	} else {
		return 0;
	}
	fk.port = sk->skc_dport;
	fk.kind = FLOW_REV;
	s->cookie = bpf_get_socket_cookie(sk);
	fk.cookie = s->cookie;
	s->flow = bpf_map_lookup_elem(&rvs_flow, &fk);
	return s->flow != 0;
}

static __always_inline __u32 queued(struct tcp_sock *tp)
{
	return (tp->write_seq - tp->snd_una) + (tp->rcv_nxt - tp->copied_seq);
}

SEC("iter/tcp")
int rvs_rb_report(struct bpf_iter__tcp *ctx)
{
	struct rb_report r = {};
	struct rb_watch *w;
	struct seen s;

	if (!balanced(ctx->sk_common, &s))
		return 0;
	r.cookie = s.cookie;
	r.svc = s.flow->svc;
	r.backend = s.flow->backend;
	r.gen = s.flow->gen;
	r.queued = queued(s.tp);
	w = bpf_map_lookup_elem(&rvs_rb_watch, &s.cookie);
	if (w) {
		r.out_bytes = w->out_bytes;
		r.in_bytes = w->in_bytes;
		r.last = w->last;
		r.watched = 1;
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

static __always_inline long sock_destroy(struct sock_common *sk)
{
	register long r1 asm("r1") = (long)sk;
	register long r0 asm("r0");

	/* call bpf_sock_destroy (BPF_CALL, src_reg BPF_PSEUDO_KFUNC_CALL). */
	asm volatile(".byte 0x85, 0x20, 0x00, 0x00\n\t" KFUNC_MARKER
		     : "=r"(r0), "+r"(r1)
		     :
		     : "r2", "r3", "r4", "r5", "memory");
	return r0;
}

SEC("iter/tcp")
int rvs_rb_destroy(struct bpf_iter__tcp *ctx)
{
	struct sock_common *sk = ctx->sk_common;
	struct rb_result res = {};
	struct rb_watch *w;
	struct rb_doom *d;
	struct seen s;

	if (!balanced(sk, &s))
		return 0;
	d = bpf_map_lookup_elem(&rvs_rb_doomed, &s.cookie);
	if (!d)
		return 0;
	w = bpf_map_lookup_elem(&rvs_rb_watch, &s.cookie);
	res.cookie = s.cookie;
	if (!w || w->last != RB_LAST_IN || w->out_bytes != d->out_bytes ||
	    w->in_bytes != d->in_bytes || queued(s.tp)) {
		res.err = 1; /* no longer idle: left alone */
	} else {
		res.err = (__s32)sock_destroy(sk);
	}
	bpf_seq_write(ctx->meta->seq, &res, sizeof(res));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
