// Reads r3, which nothing wrote.
#include "common.h"
SEC("xdp") int uninit_register(struct xdp_md *ctx)
{
	long v;
	asm volatile("%0 = r3" : "=r"(v));
	return v ? XDP_PASS : XDP_DROP;
}
