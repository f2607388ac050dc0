// Reads metadata without proving it lies before data.
#include "common.h"
SEC("xdp") int pkt_meta_no_check(struct xdp_md *ctx)
{
	__u32 *meta = (void *)(long)ctx->data_meta;
	return *meta ? XDP_PASS : XDP_DROP;
}
