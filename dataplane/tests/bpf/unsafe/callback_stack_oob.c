// A bpf_loop callback indexes the caller's 8-byte buffer with its unchecked loop index.
#include "common.h"
static long fill(__u32 i, void *data)
{
	((__u8 *)data)[i] = 1;
	return 0;
}
SEC("xdp") int callback_stack_oob(struct xdp_md *ctx)
{
	__u8 buf[8] = {};
	bpf_loop(8, fill, buf, 0);
	return buf[3] ? XDP_PASS : XDP_DROP;
}
