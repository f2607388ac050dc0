// A 2-byte load of a 4-byte context field.
#include "common.h"
SEC("xdp") int ctx_narrow_load(struct xdp_md *ctx)
{
	return *(volatile __u16 *)&ctx->ingress_ifindex ? XDP_PASS : XDP_DROP;
}
