// An L4 load balancer in the style of Katran: packets for the virtual IP (VIP) are hashed on
// their 5-tuple, mapped onto a backend with consistent (rendezvous) hashing through a ring of
// slots, encapsulated IP-in-IP towards that backend with bpf_xdp_adjust_head, and sent back out
// of the interface they came in on (XDP_TX) with the MACs swapped (the sender is the router).
// Anything else is passed to the stack.
//
// Knobs (const volatile, overridable with [program.globals] in the dataplane config):
// vip_addr / vip_port (host order), backend_base (host order; backend i is base + i),
// backend_count (1..MAX_BACKENDS), encap_src (host order).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_BACKENDS 8
#define RING_SIZE 256

const volatile __u32 vip_addr = 0x0a000002;     // 10.0.0.2
const volatile __u16 vip_port = 80;
const volatile __u32 backend_base = 0x0a010001; // 10.1.0.1
const volatile __u32 backend_count = 4;
const volatile __u32 encap_src = 0x0a020001;    // 10.2.0.1

// Ring slot -> backend index + 1 (0: not assigned yet; assigned on first use).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, RING_SIZE);
} ch_ring SEC(".maps");

struct backend_stats {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct backend_stats);
	__uint(max_entries, MAX_BACKENDS);
} backend_stats SEC(".maps");

static __always_inline __u32 mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	h *= 0x846ca68b;
	h ^= h >> 16;
	return h;
}

// Rendezvous hashing: the backend with the highest weight for this slot. Adding or removing a
// backend moves only the slots that it wins or held.
static __always_inline __u32 pick_backend(__u32 slot, __u32 count)
{
	__u32 best = 0, best_w = 0;
#pragma unroll
	for (__u32 i = 0; i < MAX_BACKENDS; i++) {
		__u32 w = mix(slot * 0x9e3779b1 ^ (i + 1) * 0x85ebca6b);
		if (i < count && w >= best_w) {
			best_w = w;
			best = i;
		}
	}
	return best;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int xdp_balancer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	if (ip->ihl != 5 || ip->daddr != bpf_htonl(vip_addr))
		return XDP_PASS;
	if (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	// UDP and TCP both start with the two ports.
	struct udphdr *l4 = (void *)(ip + 1);
	if ((void *)(l4 + 1) > data_end)
		return XDP_DROP;
	if (l4->dest != bpf_htons(vip_port))
		return XDP_PASS;

	__u32 hash = mix(ip->saddr ^ mix(ip->daddr ^ mix(((__u32)l4->source << 16 | l4->dest) ^ ip->protocol)));
	__u32 slot = hash % RING_SIZE;
	__u32 *assigned = bpf_map_lookup_elem(&ch_ring, &slot);
	if (!assigned)
		return XDP_ABORTED;
	__u32 count = backend_count;
	if (count == 0 || count > MAX_BACKENDS)
		return XDP_DROP;
	__u32 idx;
	if (*assigned == 0 || *assigned > count) {
		idx = pick_backend(slot, count);
		*assigned = idx + 1;
	} else {
		idx = *assigned - 1;
	}

	__u16 inner_len = bpf_ntohs(ip->tot_len);
	struct backend_stats *st = bpf_map_lookup_elem(&backend_stats, &idx);
	if (st) {
		st->packets += 1;
		st->bytes += inner_len;
	}

	unsigned char dst[ETH_ALEN], src[ETH_ALEN];
	__builtin_memcpy(dst, eth->h_source, ETH_ALEN);
	__builtin_memcpy(src, eth->h_dest, ETH_ALEN);

	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	struct iphdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);

	outer->version = 4;
	outer->ihl = 5;
	outer->tos = 0;
	outer->tot_len = bpf_htons(inner_len + sizeof(struct iphdr));
	outer->id = 0;
	outer->frag_off = 0;
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = bpf_htonl(encap_src);
	outer->daddr = bpf_htonl(backend_base + idx);

	__u32 sum = 0;
	__u16 *words = (__u16 *)outer;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		sum += words[i];
	outer->check = csum_fold(sum);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
