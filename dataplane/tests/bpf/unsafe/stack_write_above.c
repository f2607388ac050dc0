// Writes above the frame pointer.
#include "common.h"
SEC("xdp") int stack_write_above(struct xdp_md *ctx)
{
	asm volatile("*(u64 *)(r10 + 8) = r1" ::: "memory");
	return XDP_PASS;
}
