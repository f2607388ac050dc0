// Two frames of 320 bytes each: 640 bytes combined, more than 512.
#include "common.h"
static __noinline int inner(int x)
{
	asm volatile("r1 = 0; *(u64 *)(r10 - 320) = r1" ::: "r1", "memory");
	BARRIER(x);
	return x;
}
SEC("xdp") int calls_stack_too_big(struct xdp_md *ctx)
{
	asm volatile("r1 = 0; *(u64 *)(r10 - 320) = r1" ::: "r1", "memory");
	return inner(ctx->rx_queue_index) ? XDP_PASS : XDP_DROP;
}
