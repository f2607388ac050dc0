// A bpf_loop callback returns 2; a callback must return 0 (go on) or 1 (stop).
#include "common.h"
static long two(__u32 i, void *data)
{
	return 2;
}
SEC("xdp") int callback_bad_return(struct xdp_md *ctx)
{
	bpf_loop(4, two, NULL, 0);
	return XDP_PASS;
}
