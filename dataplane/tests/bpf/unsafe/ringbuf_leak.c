// A ring-buffer record submitted on one path only: a leaked reference on the other.
#include "common.h"
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} rb SEC(".maps");
SEC("xdp") int ringbuf_leak(struct xdp_md *ctx)
{
	__u64 *e = bpf_ringbuf_reserve(&rb, 8, 0);
	if (!e)
		return XDP_PASS;
	*e = ctx->rx_queue_index;
	if (ctx->rx_queue_index == 0)
		bpf_ringbuf_submit(e, 0);
	return XDP_PASS;
}
