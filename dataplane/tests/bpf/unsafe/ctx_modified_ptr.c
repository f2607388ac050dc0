// Dereferences the context pointer after moving it.
#include "common.h"
SEC("xdp") int ctx_modified_ptr(struct xdp_md *ctx)
{
	void *p = ctx;
	asm volatile("%0 += 12" : "+r"(p));
	return *(__u32 *)p ? XDP_PASS : XDP_DROP;
}
