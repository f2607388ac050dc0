// bpf_tail_call through an array map instead of a prog array.
#include "common.h"
SEC("xdp") int tail_call_wrong_map(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &amap, 0);
	return XDP_PASS;
}
