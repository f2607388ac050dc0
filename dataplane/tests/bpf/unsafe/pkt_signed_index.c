// A signed index checked only from above can be negative.
#include "common.h"
SEC("xdp") int pkt_signed_index(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 64) > END(ctx))
		return XDP_DROP;
	long i = (__s8)data[0];
	BARRIER(i);
	if (i > 10)
		return XDP_DROP;
	return data[20 + i];
}
