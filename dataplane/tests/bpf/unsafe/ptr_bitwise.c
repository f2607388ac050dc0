// Masking a packet pointer.
#include "common.h"
SEC("xdp") int ptr_bitwise(struct xdp_md *ctx)
{
	void *data = DATA(ctx);
	asm volatile("%0 &= -4" : "+r"(data));
	if (data + 14 > END(ctx))
		return XDP_DROP;
	return *(__u8 *)data;
}
