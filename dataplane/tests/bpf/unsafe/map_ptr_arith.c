// Arithmetic on a map handle.
#include "common.h"
SEC("xdp") int map_ptr_arith(struct xdp_md *ctx)
{
	__u32 key = 0;
	void *m = &hmap;
	asm volatile("%0 += 8" : "+r"(m));
	return bpf_map_lookup_elem(m, &key) ? XDP_PASS : XDP_DROP;
}
