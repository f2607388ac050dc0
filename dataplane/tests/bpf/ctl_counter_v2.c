// The replacement in the control tests: xdp_counter's map (same name and definition, so a
// `prog replace` keeps it), the same MAC swap and XDP_TX, and two marks that tell its frames
// and its runs apart: the IPv4 TTL byte becomes 0xee, and a new map counts its runs.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1024);
} pkt_len_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} v2_runs SEC(".maps");

SEC("xdp")
int ctl_counter_v2(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 len = data_end - data;
	__u32 one = 1, zero = 0;

	__u32 *count = bpf_map_lookup_elem(&pkt_len_count, &len);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&pkt_len_count, &len, &one, BPF_NOEXIST);
	__u64 *runs = bpf_map_lookup_elem(&v2_runs, &zero);
	if (runs)
		__sync_fetch_and_add(runs, 1);

	unsigned char *p = data;
	if ((void *)(p + 23) > data_end)
		return XDP_DROP;
	unsigned char tmp[ETH_ALEN];
	__builtin_memcpy(tmp, p, ETH_ALEN);
	__builtin_memcpy(p, p + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(p + ETH_ALEN, tmp, ETH_ALEN);
	p[22] = 0xee;
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
