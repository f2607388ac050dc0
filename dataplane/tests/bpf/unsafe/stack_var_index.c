// Indexes a 16-byte stack buffer with an unchecked packet byte.
#include "common.h"
SEC("xdp") int stack_var_index(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 14) > END(ctx))
		return XDP_DROP;
	volatile __u8 buf[16] = {};
	buf[data[0]] = 1;
	return buf[3];
}
