// bpf_loop's callback is a number from the context, not a function of the program.
#include "common.h"
SEC("xdp") int callback_not_constant(struct xdp_md *ctx)
{
	void *cb = (void *)(long)ctx->ingress_ifindex;
	BARRIER(cb);
	bpf_loop(4, cb, NULL, 0);
	return XDP_PASS;
}
