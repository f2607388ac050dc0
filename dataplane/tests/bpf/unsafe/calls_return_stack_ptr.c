// A function returning a pointer into its own (dead) frame.
#include "common.h"
static __noinline __u64 *local(__u64 x)
{
	__u64 buf[2] = {x, x};
	__u64 *p = buf;
	BARRIER(p);
	return p;
}
SEC("xdp") int calls_return_stack_ptr(struct xdp_md *ctx)
{
	__u64 *p = local(ctx->rx_queue_index);
	BARRIER(p);
	return p ? XDP_PASS : XDP_DROP;
}
