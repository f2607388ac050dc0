// Indexes the packet with a byte from it, checked only for 14 bytes.
#include "common.h"
SEC("xdp") int pkt_var_index(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 14) > END(ctx))
		return XDP_DROP;
	__u8 i = data[0];
	return data[i];
}
