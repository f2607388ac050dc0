// egress_ifindex is only readable by devmap programs.
#include "common.h"
SEC("xdp") int ctx_egress_ifindex(struct xdp_md *ctx)
{
	return ctx->egress_ifindex ? XDP_PASS : XDP_DROP;
}
