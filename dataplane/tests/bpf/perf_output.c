// bpf-cflags: -mcpu=v3
/* bpf_perf_event_output from XDP into a PERF_EVENT_ARRAY: BPF_F_CURRENT_CPU and explicit
 * indexes, the packet appended through BPF_F_CTXLEN_MASK (all of it, and one byte more than
 * there is), an index out of range and unknown flags. Return values in `perf_results`. With no
 * perf event in the array every call fails the same way in the kernel and here (-ENOENT,
 * -E2BIG, -EFAULT, -EINVAL); tests/differential.rs also opens an output buffer on our side and
 * reads the samples back.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} perf_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 6);
	__type(key, __u32);
	__type(value, __s64);
} perf_results SEC(".maps");

static __always_inline void put(__u32 i, __s64 v)
{
	__s64 *slot = bpf_map_lookup_elem(&perf_results, &i);

	if (slot)
		*slot = v;
}

SEC("xdp")
int perf_output(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 len = end - data;
	struct {
		__u32 len;
		__u32 magic;
	} d = { (__u32)len, 0xfeedf00d };

	put(0, bpf_perf_event_output(ctx, &perf_out, BPF_F_CURRENT_CPU, &d, sizeof(d)));
	put(1, bpf_perf_event_output(ctx, &perf_out, BPF_F_CURRENT_CPU | (len << 32), &d, sizeof(d)));
	put(2, bpf_perf_event_output(ctx, &perf_out, 2 | ((len + 1) << 32), &d, sizeof(d)));
	put(3, bpf_perf_event_output(ctx, &perf_out, 9, &d, sizeof(d)));
	put(4, bpf_perf_event_output(ctx, &perf_out, 1ULL << 63, &d, 4));
	put(5, bpf_perf_event_output(ctx, &perf_out, 1, &d, 0));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
