// bpf-cflags: -mcpu=v3
/* bpf_tail_call through a PROG_ARRAY initialised libbpf-style (`__array(values, ...)` with
 * `.values = { [i] = &prog }`): tail_entry jumps to the slot byte 14 of the frame names (an
 * empty slot, or one past the array, falls through to the code after the call); tail_pass and
 * tail_tx end the chain; tail_count jumps to itself, so its counter shows the limit of 33 tail
 * calls per run. Counters in `tail_hits`.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} tail_hits SEC(".maps");

static __always_inline void hit(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&tail_hits, &i);

	if (v)
		*v += 1;
}

SEC("xdp")
int tail_pass(struct xdp_md *ctx)
{
	hit(2);
	return XDP_PASS;
}

SEC("xdp")
int tail_tx(struct xdp_md *ctx)
{
	hit(3);
	return XDP_TX;
}

SEC("xdp")
int tail_count(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 6);
	__uint(key_size, sizeof(__u32));
	__array(values, int(void *));
} jumps SEC(".maps") = {
	.values = {
		[1] = (void *)&tail_pass,
		[2] = (void *)&tail_tx,
		[4] = (void *)&tail_count,
	},
};

SEC("xdp")
int tail_count(struct xdp_md *ctx)
{
	hit(4);
	bpf_tail_call(ctx, &jumps, 4);
	hit(5);
	return XDP_DROP;
}

SEC("xdp")
int tail_entry(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 idx = 0;

	hit(0);
	if (data + 15 <= end)
		idx = *(__u8 *)(data + 14);
	bpf_tail_call(ctx, &jumps, idx);
	hit(1);
	return XDP_ABORTED + 1 + (idx & 1);
}

char LICENSE[] SEC("license") = "GPL";
