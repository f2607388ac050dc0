// A bpf_loop callback returns a value read from the caller's stack, which may be anything.
#include "common.h"
static long passthrough(__u32 i, void *data)
{
	return *(__u64 *)data;
}
SEC("xdp") int callback_unbounded_return(struct xdp_md *ctx)
{
	__u64 v = ctx->ingress_ifindex;
	bpf_loop(4, passthrough, &v, 0);
	return XDP_PASS;
}
