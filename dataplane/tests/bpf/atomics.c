// bpf-cflags: -mcpu=v3
/* Every atomic operation, 32- and 64-bit, on a map value and on .bss: add/or/and/xor without
 * fetch (result unused) and with fetch (the old value is kept), xchg and cmpxchg (successful and
 * failing compare). Each `*_old` slot holds what a fetching operation returned; the `cells` show
 * the final memory. Starting values come from the packet so nothing folds.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct atomic_cells {
	__u64 c64[10];
	__u32 c32[10];
	__u64 old64[8];
	__u64 old32[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct atomic_cells);
} atomic_results SEC(".maps");

/* The same operations on global data. */
__u64 bss_counter64;
__u32 bss_counter32;
__u64 bss_old[4];

SEC("xdp")
int atomics(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct atomic_cells *o;

	if (data + 98 > end)
		return XDP_ABORTED;
	o = bpf_map_lookup_elem(&atomic_results, &key);
	if (!o)
		return XDP_ABORTED;

	__u64 x = *(__u64 *)(data + 42) | 0x8000000000000000ULL;
	__u64 y = *(__u64 *)(data + 50);
	__u32 x32 = (__u32)x | 0x80000000u;
	__u32 y32 = (__u32)y;
	int i;

	for (i = 0; i < 10; i++) {
		o->c64[i] = x;
		o->c32[i] = x32;
	}

	/* No fetch: BPF_ADD / BPF_OR / BPF_AND / BPF_XOR. */
	__sync_fetch_and_add(&o->c64[0], y);
	__sync_fetch_and_or(&o->c64[1], y);
	__sync_fetch_and_and(&o->c64[2], y);
	__sync_fetch_and_xor(&o->c64[3], y);
	__sync_fetch_and_add(&o->c32[0], y32);
	__sync_fetch_and_or(&o->c32[1], y32);
	__sync_fetch_and_and(&o->c32[2], y32);
	__sync_fetch_and_xor(&o->c32[3], y32);

	/* Fetch: the old value comes back. */
	o->old64[0] = __sync_fetch_and_add(&o->c64[4], y);
	o->old64[1] = __sync_fetch_and_or(&o->c64[5], 0x0f0f);
	o->old64[2] = __atomic_fetch_and(&o->c64[6], y, __ATOMIC_SEQ_CST);
	o->old64[3] = __atomic_fetch_xor(&o->c64[7], y, __ATOMIC_RELAXED);
	o->old32[0] = __sync_fetch_and_add(&o->c32[4], y32);
	o->old32[1] = __sync_fetch_and_or(&o->c32[5], 0x0f0f);
	o->old32[2] = __atomic_fetch_and(&o->c32[6], y32, __ATOMIC_SEQ_CST);
	o->old32[3] = __atomic_fetch_xor(&o->c32[7], y32, __ATOMIC_RELAXED);

	/* Exchange and compare-exchange (one matching, one not). */
	o->old64[4] = __sync_lock_test_and_set(&o->c64[8], y);
	o->old64[5] = __sync_val_compare_and_swap(&o->c64[9], x, y + 1);
	o->old64[6] = __sync_val_compare_and_swap(&o->c64[9], x, y + 2); /* fails: now y + 1 */
	o->old32[4] = __atomic_exchange_n(&o->c32[8], y32, __ATOMIC_SEQ_CST);
	o->old32[5] = __sync_val_compare_and_swap(&o->c32[9], x32, y32 + 1);
	o->old32[6] = __sync_val_compare_and_swap(&o->c32[9], x32, y32 + 2);

	/* Global data: counts across runs (see the repeat tests). */
	__sync_fetch_and_add(&bss_counter64, 1);
	bss_old[0] = __sync_fetch_and_add(&bss_counter64, 2);
	__sync_fetch_and_add(&bss_counter32, 3);
	bss_old[1] = __sync_fetch_and_xor(&bss_counter32, 1);
	bss_old[2] = __sync_val_compare_and_swap(&bss_counter64, 3, 100);
	bss_old[3] = __sync_lock_test_and_set(&bss_counter32, bss_counter32 + 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
