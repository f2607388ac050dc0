// A write one word past the end of an 8-byte ring-buffer record.
#include "common.h"
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} rb SEC(".maps");
SEC("xdp") int ringbuf_past_end(struct xdp_md *ctx)
{
	__u64 *e = bpf_ringbuf_reserve(&rb, 8, 0);
	if (!e)
		return XDP_PASS;
	e[1] = 1;
	bpf_ringbuf_submit(e, 0);
	return XDP_PASS;
}
