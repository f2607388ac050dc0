// A packet pointer where the context is expected.
#include "common.h"
SEC("xdp") int ctx_as_packet(struct xdp_md *ctx)
{
	void *data = DATA(ctx);
	if (data + 14 > END(ctx))
		return XDP_DROP;
	return bpf_xdp_adjust_head((struct xdp_md *)data, 0) ? XDP_DROP : XDP_PASS;
}
