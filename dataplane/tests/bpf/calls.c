// bpf-cflags: -mcpu=v3
/* bpf-to-bpf calls: static __noinline functions with up to five arguments, nested four deep
 * below the program, each frame with its own stack buffer; a pointer to a caller's stack passed
 * down and written by the callee; a helper call (map lookup) from inside a callee; recursion-free
 * call chains entered from two sites. Frame results land in `call_results`.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct call_out {
	__u64 depth_vals[8];
	__u64 caller_buf[4];
	__u64 total;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct call_out);
} call_results SEC(".maps");

/* Depth 4: the deepest frame; writes into the buffer its caller's caller owns. */
static __noinline __u64 leaf(__u64 a, __u64 b, __u64 *out, __u32 idx, __u64 salt)
{
	volatile __u64 mine[4];
	__u32 i;

	for (i = 0; i < 4; i++)
		mine[i] = a * (i + 1) + b + salt;
	if (idx < 4)
		out[idx] = mine[idx] ^ 0xabcdef;
	return mine[0] + mine[3];
}

/* Depth 3: a map lookup from a subprogram. */
static __noinline __u64 middle(__u64 a, __u64 b, __u64 *out)
{
	volatile __u32 scratch[8];
	__u32 key = 0;
	struct call_out *o;
	__u64 r;

	scratch[0] = (__u32)a;
	scratch[7] = (__u32)b;
	r = leaf(a, b, out, 1, scratch[0] + scratch[7]);
	o = bpf_map_lookup_elem(&call_results, &key);
	if (o)
		o->depth_vals[3] = r;
	return r + leaf(b, a, out, 2, 9);
}

/* Depth 2. */
static __noinline __u64 outer(__u64 a, __u64 *out)
{
	volatile __u8 bytes[16];
	__u32 i;

	for (i = 0; i < 16; i++)
		bytes[i] = (__u8)(a >> (i & 7)) + i;
	return middle(a, bytes[3] | (__u64)bytes[15] << 8, out) + bytes[0];
}

/* Depth 1: called twice from the program. */
static __noinline __u64 entry(__u64 a, __u64 *out, __u64 *depth_vals)
{
	volatile __u64 local = a * 3;

	depth_vals[1] = local;
	depth_vals[2] = outer(local, out);
	return depth_vals[2] + local;
}

SEC("xdp")
int calls(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 buf[4] = {0, 0, 0, 0};
	__u64 depth[4] = {0, 0, 0, 0};
	__u32 key = 0;
	struct call_out *o;

	if (data + 64 > end)
		return XDP_ABORTED;
	__u64 x = *(__u64 *)(data + 42);

	__u64 r1 = entry(x, buf, depth);
	__u64 r2 = entry(x >> 8, buf, depth);
	o = bpf_map_lookup_elem(&call_results, &key);
	if (!o)
		return XDP_ABORTED;
	o->depth_vals[0] = r1;
	o->depth_vals[1] = depth[1];
	o->depth_vals[2] = depth[2];
	o->depth_vals[4] = r2;
	o->depth_vals[5] = leaf(1, 2, buf, 3, 4);
	__builtin_memcpy(o->caller_buf, buf, sizeof(buf));
	o->total = r1 + r2;
	return (r1 & 1) ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
