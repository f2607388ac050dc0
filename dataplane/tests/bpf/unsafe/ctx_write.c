// Writes a context field: xdp_md is read-only.
#include "common.h"
SEC("xdp") int ctx_write(struct xdp_md *ctx)
{
	ctx->rx_queue_index = 0;
	return XDP_PASS;
}
