// bpf_loop's callback context points into the packet: it must be a stack pointer or NULL.
#include "common.h"
static long noop(__u32 i, void *data)
{
	return 0;
}
SEC("xdp") int callback_ctx_packet(struct xdp_md *ctx)
{
	void *data = DATA(ctx);
	if (data + 8 > END(ctx))
		return XDP_DROP;
	bpf_loop(4, noop, data, 0);
	return XDP_PASS;
}
