// Reads 4 bytes of a spilled pointer.
#include "common.h"
SEC("xdp") int stack_partial_fill(struct xdp_md *ctx)
{
	long v;
	asm volatile("*(u64 *)(r10 - 8) = r1; %0 = *(u32 *)(r10 - 8)" : "=r"(v) :: "memory");
	return v ? XDP_PASS : XDP_DROP;
}
