// A ring-buffer record written before checking the reservation succeeded.
#include "common.h"
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} rb SEC(".maps");
SEC("xdp") int ringbuf_no_null_check(struct xdp_md *ctx)
{
	__u64 *e = bpf_ringbuf_reserve(&rb, 8, 0);
	BARRIER(e);
	*e = 1;
	bpf_ringbuf_submit(e, 0);
	return XDP_PASS;
}
