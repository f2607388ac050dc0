// Reads on the branch where the packet is known to be too short.
#include "common.h"
SEC("xdp") int pkt_wrong_branch(struct xdp_md *ctx)
{
	void *data = DATA(ctx);
	if (data + 14 <= END(ctx))
		return XDP_PASS;
	return *(__u8 *)(data + 12);
}
