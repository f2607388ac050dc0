// Reads below the 512-byte frame.
#include "common.h"
SEC("xdp") int stack_read_below(struct xdp_md *ctx)
{
	long v;
	asm volatile("%0 = *(u64 *)(r10 - 520)" : "=r"(v));
	return v ? XDP_PASS : XDP_DROP;
}
