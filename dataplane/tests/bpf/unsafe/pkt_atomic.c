// Atomic add on the packet: atomics only go to the stack and map values.
#include "common.h"
SEC("xdp") int pkt_atomic(struct xdp_md *ctx)
{
	__u32 *data = DATA(ctx);
	if ((void *)(data + 4) > END(ctx))
		return XDP_DROP;
	__sync_fetch_and_add(data, 1);
	return XDP_PASS;
}
