// Arithmetic on data_end is prohibited.
#include "common.h"
SEC("xdp") int pkt_end_arithmetic(struct xdp_md *ctx)
{
	void *end = END(ctx);
	long k = 1;
	BARRIER(k);
	end -= k;
	return end > DATA(ctx) ? XDP_PASS : XDP_DROP;
}
