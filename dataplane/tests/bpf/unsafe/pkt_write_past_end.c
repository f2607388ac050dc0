// Checks 14 bytes, writes the 15th.
#include "common.h"
SEC("xdp") int pkt_write_past_end(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 14) > END(ctx))
		return XDP_DROP;
	data[14] = 0;
	return XDP_PASS;
}
