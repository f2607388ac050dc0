/* Callbacks: bpf_loop over a buffer on the caller's stack (variable index behind the callback's
 * own bounds check, an early stop from the data), bpf_loop with a data-dependent count, with
 * bad flags (-EINVAL) and too many loops (-E2BIG); bpf_for_each_map_elem over an array (values
 * rewritten, early stop), a hash map (elements inserted from the frame, some deleted by the
 * callback), a per-CPU array and a per-CPU hash; a bpf_loop nested in a for_each callback, and a
 * callback that calls a subprogram. Every result lands in `cb_out`; the walks are independent of
 * the order a hash map keeps its elements in, so the kernel and we agree element for element.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct cb_result {
	__u64 byte_sum;
	__u64 loop_ret;
	__u64 dyn_ret;
	__u64 dyn_sum;
	__s64 bad_flags;
	__s64 too_many;
	__u64 array_sum;
	__u64 array_ret;
	__u64 hash_sum;
	__u64 hash_ret;
	__u64 pcpu_sum;
	__u64 pcpu_ret;
	__u64 pcpu_hash_sum;
	__u64 pcpu_hash_ret;
	__u64 nested;
	__u64 runs;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cb_result);
} cb_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} cb_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, __u64);
} cb_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} cb_pcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} cb_pcpu_hash SEC(".maps");

struct bytes_ctx {
	__u8 buf[16];
	__u64 sum;
	__u32 stop;
};

static long sum_bytes(__u32 i, void *data)
{
	struct bytes_ctx *c = data;

	if (i >= 16)
		return 1;
	c->sum = c->sum * 31 + c->buf[i];
	if (c->buf[i] == c->stop)
		return 1;
	return 0;
}

static long count_up(__u32 i, void *data)
{
	*(__u64 *)data += i * 3 + 1;
	return 0;
}

static long never_called(__u32 i, void *data)
{
	return 0;
}

struct walk_ctx {
	__u64 sum;
	__u32 stop_key;
	__u32 nested;
};

static __attribute__((noinline)) __u64 mix(__u64 a, __u64 b)
{
	return a * 7 + (b ^ 0x55);
}

static long inner(__u32 i, void *data)
{
	*(__u32 *)data += 1;
	return 0;
}

static long walk_array(void *map, __u32 *key, __u64 *value, struct walk_ctx *c)
{
	c->sum = mix(c->sum, *value + *key);
	*value += *key + 1;
	if (*key == 2)
		bpf_loop(3, inner, &c->nested, 0);
	if (*key == c->stop_key)
		return 1;
	return 0;
}

static long walk_hash(void *map, __u32 *key, __u64 *value, struct walk_ctx *c)
{
	/* A sum, not a chain: the order of the elements must not matter. */
	c->sum += (__u64)*key * 1000 + *value;
	*value += 1;
	if (*key % 3 == 0)
		bpf_map_delete_elem(map, key);
	return 0;
}

static long walk_pcpu(void *map, __u32 *key, __u64 *value, struct walk_ctx *c)
{
	c->sum += *value * (*key + 1);
	*value += 2;
	return 0;
}

SEC("xdp")
int callbacks(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct cb_result *out = bpf_map_lookup_elem(&cb_out, &zero);

	if (!out)
		return XDP_ABORTED;
	out->runs++;

	struct bytes_ctx b = {};
	if (data + 16 <= end)
		__builtin_memcpy(b.buf, data, 16);
	b.stop = b.buf[15] | 0x80;
	out->loop_ret = bpf_loop(16, sum_bytes, &b, 0);
	out->byte_sum = b.sum;

	__u64 acc = 0;
	out->dyn_ret = bpf_loop(b.buf[13] & 0x3f, count_up, &acc, 0);
	out->dyn_sum = acc;
	out->bad_flags = bpf_loop(1, never_called, NULL, 1);
	out->too_many = bpf_loop((1 << 23) + 1, never_called, NULL, 0);

	struct walk_ctx w = { .stop_key = b.buf[12] & 7 };
	out->array_ret = bpf_for_each_map_elem(&cb_array, walk_array, &w, 0);
	out->array_sum = w.sum;
	out->nested = w.nested;

	for (__u32 k = 0; k < 4; k++) {
		__u32 key = b.buf[k] + k;
		__u64 v = b.buf[k + 4];
		bpf_map_update_elem(&cb_hash, &key, &v, BPF_NOEXIST);
		bpf_map_update_elem(&cb_pcpu_hash, &key, &v, BPF_ANY);
	}
	struct walk_ctx h = {};
	out->hash_ret = bpf_for_each_map_elem(&cb_hash, walk_hash, &h, 0);
	out->hash_sum = h.sum;

	struct walk_ctx p = {};
	out->pcpu_ret = bpf_for_each_map_elem(&cb_pcpu, walk_pcpu, &p, 0);
	out->pcpu_sum = p.sum;
	struct walk_ctx q = {};
	out->pcpu_hash_ret = bpf_for_each_map_elem(&cb_pcpu_hash, walk_pcpu, &q, 0);
	out->pcpu_hash_sum = q.sum;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
