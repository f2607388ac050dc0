// Reads past struct xdp_md.
#include "common.h"
SEC("xdp") int ctx_past_end(struct xdp_md *ctx)
{
	return *(__u32 *)((void *)ctx + 24) ? XDP_PASS : XDP_DROP;
}
