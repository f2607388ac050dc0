// xdp_counter (configs/bpf/xdp_counter.c) with a plain increment instead of the atomic one, for
// peers without atomic instructions (rbpf 0.4.1: its verifier refuses XADD, its JIT has it as
// unimplemented!()). Everything else is the seed program: count frames by length in a hash
// map, swap the Ethernet MACs, XDP_TX.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1024);
} pkt_len_count SEC(".maps");

SEC("xdp")
int xdp_counter_plain(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 len = data_end - data;
	__u32 one = 1;

	__u32 *count = bpf_map_lookup_elem(&pkt_len_count, &len);
	if (count)
		*count += 1;
	else
		bpf_map_update_elem(&pkt_len_count, &len, &one, BPF_NOEXIST);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;

	unsigned char tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
