// bpf-cflags: -mcpu=v3
/* The ring buffer from XDP: bpf_ringbuf_reserve + submit (or discard on lengths divisible by 5,
 * and a reservation with invalid flags or larger than the ring, which give NULL),
 * bpf_ringbuf_output of len & 1023 bytes from a map value (so a few repeats fill the 4 KiB ring
 * and later outputs fail with -EAGAIN), with invalid flags on lengths divisible by 7, and
 * bpf_ringbuf_query of every field. Results in `rb_results`; the differential test compares the
 * records with the kernel's ring read through mmap, and drains both rings the same way.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct event {
	__u32 len;
	__u32 kind;
	__u64 head;
	__u64 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[1024]);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 12);
	__type(key, __u32);
	__type(value, __s64);
} rb_results SEC(".maps");

static __always_inline void put(__u32 i, __s64 v)
{
	__s64 *slot = bpf_map_lookup_elem(&rb_results, &i);

	if (slot)
		*slot = v;
}

SEC("xdp")
int ringbuf(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 len = (__u64)(end - data);
	__u32 zero = 0;
	__s64 *seq = bpf_map_lookup_elem(&rb_results, &(__u32){ 11 });
	__u64 n = 0;

	if (seq)
		n = (*seq)++;

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	put(0, e != 0);
	if (e) {
		e->len = len;
		e->kind = 1;
		e->head = 0;
		if (data + 8 <= end)
			e->head = *(__u64 *)data;
		e->seq = n;
		if (len % 5 == 0)
			bpf_ringbuf_discard(e, 0);
		else
			bpf_ringbuf_submit(e, len & 1 ? BPF_RB_NO_WAKEUP : 0);
	}

	void *bad = bpf_ringbuf_reserve(&events, 8, 1);
	put(1, bad != 0);
	if (bad)
		bpf_ringbuf_submit(bad, 0);
	void *huge = bpf_ringbuf_reserve(&events, 8192, 0);
	put(2, huge != 0);
	if (huge)
		bpf_ringbuf_discard(huge, 0);

	__u8 *buf = bpf_map_lookup_elem(&scratch, &zero);
	if (buf) {
		buf[0] = len;
		buf[1] = n;
		buf[1023] = 0xee;
		__u64 flags = len % 7 == 0 ? 4 : BPF_RB_FORCE_WAKEUP;
		put(3, bpf_ringbuf_output(&events, buf, len & 1023, flags));
	}

	put(4, bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA));
	put(5, bpf_ringbuf_query(&events, BPF_RB_RING_SIZE));
	put(6, bpf_ringbuf_query(&events, BPF_RB_CONS_POS));
	put(7, bpf_ringbuf_query(&events, BPF_RB_PROD_POS));
	put(8, bpf_ringbuf_query(&events, 99));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
