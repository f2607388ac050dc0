// pointer + pointer.
#include "common.h"
SEC("xdp") int ptr_plus_ptr(struct xdp_md *ctx)
{
	void *data = DATA(ctx);
	void *end = END(ctx);
	asm volatile("%0 += %1" : "+r"(data) : "r"(end));
	return data > end ? XDP_PASS : XDP_DROP;
}
