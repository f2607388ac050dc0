// Checks against data_meta instead of data_end: proves nothing about the packet's end.
#include "common.h"
SEC("xdp") int pkt_wrong_pointer(struct xdp_md *ctx)
{
	void *data = DATA(ctx);
	void *meta = (void *)(long)ctx->data_meta;
	if (meta + 14 > data)
		return XDP_DROP;
	return *(__u8 *)(data + 12) == 8 ? XDP_PASS : XDP_DROP;
}
