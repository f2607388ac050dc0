// Nine frames: the program and eight nested calls (the limit is eight frames).
#include "common.h"
#define F(n, next) static __noinline int f##n(int x) { int r = next(x + 1); BARRIER(r); return r; }
static __noinline int f8(int x) { BARRIER(x); return x; }
F(7, f8) F(6, f7) F(5, f6) F(4, f5) F(3, f4) F(2, f3) F(1, f2)
SEC("xdp") int calls_too_deep(struct xdp_md *ctx)
{
	return f1(ctx->rx_queue_index) ? XDP_PASS : XDP_DROP;
}
