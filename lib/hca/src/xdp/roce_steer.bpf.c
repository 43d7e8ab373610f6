// SPDX-License-Identifier: BSD-3-Clause
// The XDP program of the xdp provider (xdp_hca.cpp): RoCE v2 packets (UDP
// destination port 4791) addressed to a QP of the process that loaded it go
// to that process's AF_XDP socket on the queue they arrived on; everything
// else (other traffic, RoCE packets for the kernel's own rxe or for another
// process) goes on: XDP_PASS, which under libxdp's dispatcher hands the
// packet to the next program on the interface and in the end to the kernel.
//
// Which packets are ours, the provider writes into two maps:
//   qpns:   destination QPN -> 1, for each of its UD QPs;
//   groups: destination IP address (IPv6, or IPv4 as ::ffff:a.b.c.d) -> 1,
//           for each multicast group one of its QPs is attached to (the
//           packet's QPN is then 0xffffff).
// xsks holds the process's sockets, indexed by the receive queue each is bound to.
// owner names the process (pid, start time): a program whose process died
// without detaching it (killed) is found by the next one and detached.
//
// Built with clang -target bpf; the object is embedded in the provider's glue.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ROCE_V2_PORT 4791
#define MULTICAST_QPN 0xffffff
#define VLAN_TPID 0x8100

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u32);
} qpns SEC(".maps");

struct owner {
    __u32 pid;
    __u32 pad;
    __u64 start_time;  // /proc/PID/stat field 22: tells a reused PID apart
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct owner);
} owner SEC(".maps");

struct group_key {
    __u8 addr[16];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, struct group_key);
    __type(value, __u32);
} groups SEC(".maps");

SEC("xdp")
int roce_steer(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    void *l3 = eth + 1;
    __u16 proto = eth->h_proto;
    if (proto == bpf_htons(VLAN_TPID)) {  // one 802.1Q tag
        if (l3 + 4 > end)
            return XDP_PASS;
        proto = *(__u16 *)(l3 + 2);
        l3 += 4;
    }
    struct group_key dst = {};
    struct udphdr *udp;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
            return XDP_PASS;
        dst.addr[10] = 0xff;
        dst.addr[11] = 0xff;
        __builtin_memcpy(&dst.addr[12], &ip->daddr, 4);
        udp = (void *)(ip + 1);
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
            return XDP_PASS;
        __builtin_memcpy(dst.addr, &ip6->daddr, 16);
        udp = (void *)(ip6 + 1);
    } else {
        return XDP_PASS;
    }
    if ((void *)(udp + 1) > end || udp->dest != bpf_htons(ROCE_V2_PORT))
        return XDP_PASS;
    __u8 *bth = (__u8 *)(udp + 1);
    if ((void *)(bth + 12) > end)
        return XDP_PASS;
    __u32 qpn = (__u32)bth[5] << 16 | (__u32)bth[6] << 8 | bth[7];
    if (qpn == MULTICAST_QPN) {
        if (!bpf_map_lookup_elem(&groups, &dst))
            return XDP_PASS;
    } else if (!bpf_map_lookup_elem(&qpns, &qpn)) {
        return XDP_PASS;
    }
    return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
