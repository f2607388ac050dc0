// An 8-byte stack store at an offset that is not a multiple of 8.
#include "common.h"
SEC("xdp") int stack_misaligned(struct xdp_md *ctx)
{
	asm volatile("r1 = 0; *(u64 *)(r10 - 12) = r1" ::: "r1", "memory");
	return XDP_PASS;
}
