// A function that calls itself.
#include "common.h"
static __noinline int fact(int n)
{
	BARRIER(n);
	if (n <= 1)
		return 1;
	int r = fact(n - 1);
	BARRIER(r);
	return n * r;
}
SEC("xdp") int calls_recursive(struct xdp_md *ctx)
{
	return fact(ctx->rx_queue_index) ? XDP_PASS : XDP_DROP;
}
