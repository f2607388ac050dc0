// bpf_ringbuf_reserve with a size that is not a known constant.
#include "common.h"
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} rb SEC(".maps");
SEC("xdp") int ringbuf_var_size(struct xdp_md *ctx)
{
	__u64 size = (ctx->rx_queue_index & 7) + 8;
	__u64 *e = bpf_ringbuf_reserve(&rb, size, 0);
	if (!e)
		return XDP_PASS;
	*e = 1;
	bpf_ringbuf_submit(e, 0);
	return XDP_PASS;
}
