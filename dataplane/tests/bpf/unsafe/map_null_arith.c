// Pointer arithmetic on a lookup result before its NULL check.
#include "common.h"
SEC("xdp") int map_null_arith(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&hmap, &key);
	asm volatile("%0 += 8" : "+r"(v));
	if (!v)
		return XDP_DROP;
	return *v ? XDP_PASS : XDP_DROP;
}
