// Dereferences a hash map lookup without checking for NULL.
#include "common.h"
SEC("xdp") int map_no_null_check(struct xdp_md *ctx)
{
	__u32 key = 1;
	__u64 *v = bpf_map_lookup_elem(&hmap, &key);
	BARRIER(v);
	return *v ? XDP_PASS : XDP_DROP;
}
