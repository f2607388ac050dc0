// Reads the byte before data (inside the headroom, outside the packet).
#include "common.h"
SEC("xdp") int pkt_negative_offset(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 14) > END(ctx))
		return XDP_DROP;
	__u8 *p = data;
	long k = -1;
	BARRIER(k);
	p += k;
	return *p;
}
