// A loop bounded only by a 64-bit packet value: too complex to explore.
#include "common.h"
SEC("xdp") int loop_unbounded(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 8) > END(ctx))
		return XDP_DROP;
	__u64 n = *(__u64 *)data;
	__u64 s = 0;
	for (__u64 i = 0; i < n; i++) {
		s += i;
		BARRIER(s);
	}
	return s ? XDP_PASS : XDP_DROP;
}
