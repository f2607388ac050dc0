// A loop that never changes its state.
#include "common.h"
SEC("xdp") int loop_infinite(struct xdp_md *ctx)
{
	long x = 0;
	for (;;)
		BARRIER(x);
	return XDP_PASS;
}
