// bpf_map_pop_elem of an 8-byte element into a 4-byte map value.
#include "common.h"
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4);
	__type(value, __u64);
} q SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} small SEC(".maps");
SEC("xdp") int queue_pop_small(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u32 *v = bpf_map_lookup_elem(&small, &key);
	if (!v)
		return XDP_PASS;
	return bpf_map_pop_elem(&q, v) ? XDP_DROP : XDP_PASS;
}
