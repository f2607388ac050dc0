// A tail call while a ring-buffer record is reserved: the record would never be released.
#include "common.h"
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} rb SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} progs SEC(".maps");
SEC("xdp") int tail_call_holding_record(struct xdp_md *ctx)
{
	__u64 *e = bpf_ringbuf_reserve(&rb, 8, 0);
	if (!e)
		return XDP_PASS;
	*e = 1;
	bpf_tail_call(ctx, &progs, 0);
	bpf_ringbuf_submit(e, 0);
	return XDP_PASS;
}
