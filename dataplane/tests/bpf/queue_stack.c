// bpf-cflags: -mcpu=v3
/* bpf_map_push_elem / pop / peek on a QUEUE and a STACK, driven by the frame length: pushes with
 * flags len % 3 (BPF_ANY; BPF_NOEXIST, which the kernel refuses; BPF_EXIST, which overwrites
 * the oldest element when full), pops on odd lengths (queue) and multiples of 4 (stack), peeks
 * every time. Return values and what was read go into `qs_results`; the differential test also
 * compares the queue and stack contents after every run.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct pair {
	__u32 len;
	__u16 proto;
	__u16 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 6);
	__type(value, __u32);
} fifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 5);
	__type(value, struct pair);
} lifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 10);
	__type(key, __u32);
	__type(value, __s64);
} qs_results SEC(".maps");

static __always_inline void put(__u32 i, __s64 v)
{
	__s64 *slot = bpf_map_lookup_elem(&qs_results, &i);

	if (slot)
		*slot = v;
}

SEC("xdp")
int queue_stack(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 len = (__u64)(end - data);
	__u64 flags = len % 3;
	__u32 v = len, out = 0xdeadbeef;
	long r;

	r = bpf_map_push_elem(&fifo, &v, flags);
	put(0, r);
	if (len & 1) {
		r = bpf_map_pop_elem(&fifo, &out);
		put(1, r);
		put(2, out);
	}
	r = bpf_map_peek_elem(&fifo, &out);
	put(3, r);
	put(4, out);

	__u16 proto = 0;
	if (data + 14 <= end)
		proto = *(__u16 *)(data + 12);
	__s64 *seq = bpf_map_lookup_elem(&qs_results, &(__u32){ 9 });
	struct pair p = { .len = len, .proto = proto, .seq = seq ? (__u16)(*seq)++ : 0 };
	r = bpf_map_push_elem(&lifo, &p, flags);
	put(5, r);
	if (len % 4 == 0) {
		struct pair q = { 1, 2, 3 };
		r = bpf_map_pop_elem(&lifo, &q);
		put(6, r);
		put(7, (__s64)q.len << 32 | q.proto << 16 | q.seq);
	}
	struct pair top = {};
	r = bpf_map_peek_elem(&lifo, &top);
	put(8, r << 32 | top.seq);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
