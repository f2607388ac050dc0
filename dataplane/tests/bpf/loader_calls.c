// Loader test: static and global subprograms in .text with nested calls, shared by two programs,
// a callback passed by function pointer (bpf_loop), map/global references from subprograms, and a
// string literal in .rodata.str1.1.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} acc SEC(".maps");

const volatile __u64 factor = 3;
static volatile __u64 static_counter = 5;

static __attribute__((noinline)) __u64 leaf(__u64 x)
{
	return x * factor + static_counter;
}

static __attribute__((noinline)) __u64 middle(__u64 x)
{
	return leaf(x) + leaf(x + 1);
}

__attribute__((noinline)) int global_helper(__u32 x)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&acc, &key);
	if (!v)
		return 0;
	*v += middle(x);
	return (int)*v;
}

static int loop_cb(__u32 index, void *data)
{
	*(__u64 *)data += leaf(index);
	return 0;
}

SEC("xdp")
int calls_main(struct xdp_md *ctx)
{
	__u64 sum = 0;
	bpf_loop(4, loop_cb, &sum, 0);
	return global_helper(ctx->data_end - ctx->data) + (int)sum;
}

SEC("xdp/other")
int calls_other(struct xdp_md *ctx)
{
	/* A string literal passed by pointer lands in .rodata.str1.1. */
	bpf_trace_printk("other %d\n", sizeof("other %d\n"), ctx->ingress_ifindex);
	return (int)middle(ctx->ingress_ifindex);
}

char LICENSE[] SEC("license") = "GPL";
