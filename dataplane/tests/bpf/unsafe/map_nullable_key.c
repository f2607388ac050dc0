// Passes an unchecked lookup result as the key of another lookup.
#include "common.h"
SEC("xdp") int map_nullable_key(struct xdp_md *ctx)
{
	__u32 key = 0;
	void *v = bpf_map_lookup_elem(&hmap, &key);
	BARRIER(v);
	return bpf_map_lookup_elem(&hmap, v) ? XDP_PASS : XDP_DROP;
}
