// bpf_trace_printk told to read 600 bytes of an 8-byte stack buffer.
#include "common.h"
SEC("xdp") int stack_helper_oob(struct xdp_md *ctx)
{
	char fmt[8] = "hi\n";
	__u32 n = 600;
	BARRIER(n);
	return bpf_trace_printk(fmt, n) < 0 ? XDP_DROP : XDP_PASS;
}
