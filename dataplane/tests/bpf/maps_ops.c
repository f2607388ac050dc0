// bpf-cflags: -mcpu=v3
/* Map helpers on HASH and ARRAY maps, with every flag outcome: bpf_map_update_elem with
 * BPF_ANY / BPF_NOEXIST / BPF_EXIST (success, -EEXIST, -ENOENT), a full hash (-E2BIG), an array
 * index out of range (-E2BIG), an invalid flag (-EINVAL), bpf_map_delete_elem (0, -ENOENT, and
 * -EINVAL on an array), bpf_map_lookup_elem hits and misses. Every helper's return value is
 * recorded in `map_ret_codes` (slot = step number) so the differential tests compare them; the
 * maps themselves end in a known state. Run once per load: the steps assume empty maps.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} flow_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} slot_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, __s64);
} map_ret_codes SEC(".maps");

static __always_inline void record(__u32 step, __s64 rc)
{
	__s64 *slot = bpf_map_lookup_elem(&map_ret_codes, &step);

	if (slot)
		*slot = rc;
}

static __always_inline __s64 put(void *map, __u32 key, __u64 value, __u64 flags)
{
	return bpf_map_update_elem(map, &key, &value, flags);
}

static __always_inline __s64 del(void *map, __u32 key)
{
	return bpf_map_delete_elem(map, &key);
}

static __always_inline __s64 get(void *map, __u32 key)
{
	__u64 *v = bpf_map_lookup_elem(map, &key);

	return v ? (__s64)*v : -1;
}

SEC("xdp")
int maps_ops(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	if (data + 50 > end)
		return XDP_ABORTED;
	__u64 x = *(__u64 *)(data + 42);

	/* Hash map. */
	record(0, put(&flow_table, 1, x, BPF_NOEXIST));     /* 0 */
	record(1, put(&flow_table, 1, x + 1, BPF_NOEXIST)); /* -EEXIST */
	record(2, put(&flow_table, 2, x + 2, BPF_EXIST));   /* -ENOENT */
	record(3, put(&flow_table, 1, x + 3, BPF_EXIST));   /* 0: value x + 3 */
	record(4, put(&flow_table, 2, 20, BPF_ANY));
	record(5, put(&flow_table, 3, 30, BPF_ANY));
	record(6, put(&flow_table, 4, 40, BPF_ANY));
	record(7, put(&flow_table, 5, 50, BPF_ANY));        /* -E2BIG: full */
	record(8, put(&flow_table, 4, 44, BPF_ANY));        /* 0: replacing is fine when full */
	record(9, put(&flow_table, 5, 50, BPF_NOEXIST));    /* -E2BIG */
	record(10, del(&flow_table, 3));                    /* 0 */
	record(11, del(&flow_table, 3));                    /* -ENOENT */
	record(12, get(&flow_table, 3));                    /* miss: -1 */
	record(13, get(&flow_table, 1));                    /* x + 3 */
	record(14, put(&flow_table, 5, 55, BPF_NOEXIST));   /* 0: room again */
	record(15, put(&flow_table, 6, 66, 8));             /* bad flag: -EINVAL */

	/* Array map. */
	record(16, put(&slot_table, 0, x, BPF_NOEXIST));    /* -EEXIST: array slots always exist */
	record(17, put(&slot_table, 1, x ^ 1, BPF_EXIST));  /* 0 */
	record(18, put(&slot_table, 2, 22, BPF_ANY));       /* 0 */
	record(19, put(&slot_table, 4, 44, BPF_ANY));       /* -E2BIG: out of range */
	record(20, del(&slot_table, 0));                    /* -EINVAL */
	record(21, get(&slot_table, 4));                    /* miss: -1 */
	record(22, get(&slot_table, 1));                    /* x ^ 1 */
	record(23, get(&slot_table, 3));                    /* 0: never written */
	record(24, put(&slot_table, 3, 33, 8));             /* -EINVAL */

	/* Through the value pointer: an in-place increment. */
	__u32 k = 2;
	__u64 *v = bpf_map_lookup_elem(&slot_table, &k);
	if (v)
		*v += 100;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
