// Checks 13 bytes, reads the 16-bit field at 12 (bytes 12 and 13).
#include "common.h"
SEC("xdp") int pkt_off_by_one(struct xdp_md *ctx)
{
	void *data = DATA(ctx);
	if (data + 13 > END(ctx))
		return XDP_DROP;
	return *(__u16 *)(data + 12) == 8 ? XDP_PASS : XDP_DROP;
}
