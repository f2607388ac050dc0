// bpf_csum_diff over 64 bytes of a packet proven 14 bytes long.
#include "common.h"
SEC("xdp") int csum_diff_past_end(struct xdp_md *ctx)
{
	void *data = DATA(ctx);
	if (data + 14 > END(ctx))
		return XDP_DROP;
	return bpf_csum_diff(0, 0, data, 64, 0) ? XDP_PASS : XDP_DROP;
}
