// Indexes a .bss array with an unchecked packet byte.
#include "common.h"
__u32 counters[4];
SEC("xdp") int global_var_index(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 14) > END(ctx))
		return XDP_DROP;
	counters[data[0]]++;
	return XDP_PASS;
}
