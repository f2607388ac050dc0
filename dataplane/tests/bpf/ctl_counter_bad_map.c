// A replacement the control plane must refuse: its pkt_len_count has the running program's
// name but another definition (512 entries, not 1024).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 512);
} pkt_len_count SEC(".maps");

SEC("xdp")
int ctl_counter_bad_map(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u32 one = 1;

	bpf_map_update_elem(&pkt_len_count, &len, &one, BPF_ANY);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
