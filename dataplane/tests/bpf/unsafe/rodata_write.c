// Writes a const global (.rodata is read-only for programs).
#include "common.h"
const volatile __u32 limit = 10;
SEC("xdp") int rodata_write(struct xdp_md *ctx)
{
	*(volatile __u32 *)&limit = ctx->rx_queue_index;
	return XDP_PASS;
}
