// Loader test: several programs in one object sharing BTF maps of several kinds, programs in
// `xdp`, `xdp/foo`, `xdp.frags` and `uprobe/bar` sections, map-in-map and prog-array `__array`s.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct pair {
	__u64 packets;
	__u64 bytes;
};

typedef struct pair pair_t;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, const volatile pair_t);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 128);
	__uint(key_size, 6);
	__uint(value_size, 2);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
} lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner_map);
} outer SEC(".maps") = {
	.values = { [0] = &inner_a, [2] = &inner_b },
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, 8);
	__uint(value_size, 4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lpm SEC(".maps");

int tail_target(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__array(values, int (struct xdp_md *));
} jumps SEC(".maps") = {
	.values = { [1] = (void *)&tail_target },
};

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	__u32 key = ctx->data_end - ctx->data;
	__u64 one = 1, *v = bpf_map_lookup_elem(&counts, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&counts, &key, &one, BPF_ANY);
	return XDP_PASS;
}

SEC("xdp/foo")
int foo_stats(struct xdp_md *ctx)
{
	__u32 key = 0;
	pair_t *p = bpf_map_lookup_elem(&stats, &key);
	if (p) {
		p->packets++;
		p->bytes += ctx->data_end - ctx->data;
	}
	__u64 *c = bpf_map_lookup_elem(&counts, &key);
	if (c)
		(*c)++;
	bpf_tail_call(ctx, &jumps, 1);
	return XDP_DROP;
}

SEC("xdp/foo")
int foo_second(struct xdp_md *ctx)
{
	__u32 key = 0;
	void *in = bpf_map_lookup_elem(&outer, &key);
	if (!in)
		return XDP_ABORTED;
	__u32 *v = bpf_map_lookup_elem(in, &key);
	return v ? *v : XDP_PASS;
}

SEC("xdp.frags")
int tail_target(struct xdp_md *ctx)
{
	__u8 mac[8] = {};
	__u16 *v = bpf_map_lookup_elem(&lru, mac);
	__u32 *w = bpf_map_lookup_elem(&lpm, mac);
	return (v ? *v : 0) + (w ? *w : 0);
}

SEC("uprobe/bar")
int probe_bar(void *ctx)
{
	__u64 *rec = bpf_ringbuf_reserve(&events, sizeof(__u64), 0);
	if (!rec)
		return 0;
	*rec = bpf_ktime_get_ns();
	bpf_ringbuf_submit(rec, 0);
	return 0;
}

SEC("uretprobe")
int probe_ret(void *ctx)
{
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
