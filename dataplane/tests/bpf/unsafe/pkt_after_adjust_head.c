// Uses a packet pointer after bpf_xdp_adjust_head invalidated it.
#include "common.h"
SEC("xdp") int pkt_after_adjust_head(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 14) > END(ctx))
		return XDP_DROP;
	bpf_xdp_adjust_head(ctx, 0);
	return data[0];
}
