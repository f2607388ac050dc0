// bpf-cflags: -mcpu=v3
/* Packet geometry helpers and their limits, every return code recorded in `adjust_ret_codes`:
 * bpf_xdp_adjust_head past the usable headroom and leaving fewer than 14 bytes (both -EINVAL),
 * at exactly those limits (0), then an 8-byte encapsulation (Ethernet header moved to the new
 * front, a tag behind it); bpf_xdp_adjust_tail past the end of the frame and below 14 bytes
 * (-EINVAL), shrink then grow (the grown bytes read as zero); bpf_xdp_adjust_meta misaligned
 * (-EACCES), a 16-byte metadata area written and read back (`adjust_meta_seen`), and a head move
 * with metadata present (the metadata moves with the data).
 *
 * The limits are those of BPF_PROG_TEST_RUN on Linux 6.18 with a 98-byte frame: 256 bytes of
 * headroom of which 216 are usable (the rest holds struct xdp_frame), a 4096-byte frame whose
 * last 320 bytes are the skb_shared_info tailroom (so the tail can grow by 3422 bytes).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 24);
	__type(key, __u32);
	__type(value, __s64);
} adjust_ret_codes SEC(".maps");

struct meta_seen {
	__u64 first[2];
	__u64 after_head_move[2];
	__u64 final_len;
	__u64 final_meta_len;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct meta_seen);
} adjust_meta_seen SEC(".maps");

static __always_inline void record(__u32 step, __s64 rc)
{
	__s64 *slot = bpf_map_lookup_elem(&adjust_ret_codes, &step);

	if (slot)
		*slot = rc;
}

#define DATA(ctx) ((void *)(long)(ctx)->data)
#define END(ctx) ((void *)(long)(ctx)->data_end)
#define META(ctx) ((void *)(long)(ctx)->data_meta)

SEC("xdp")
int adjust(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct meta_seen *seen = bpf_map_lookup_elem(&adjust_meta_seen, &key);

	if (!seen)
		return XDP_ABORTED;
	if (DATA(ctx) + 98 > END(ctx))
		return XDP_ABORTED;

	/* Head: the limits. */
	record(0, bpf_xdp_adjust_head(ctx, -217)); /* -EINVAL: 216 usable */
	record(1, bpf_xdp_adjust_head(ctx, -216)); /* 0 */
	record(2, bpf_xdp_adjust_head(ctx, 216));  /* 0: back */
	record(3, bpf_xdp_adjust_head(ctx, 85));   /* -EINVAL: 13 bytes left */
	record(4, bpf_xdp_adjust_head(ctx, 84));   /* 0: 14 bytes left */
	record(5, bpf_xdp_adjust_head(ctx, -84));  /* 0: the bytes are still there */

	/* Encapsulate: 8 new bytes, Ethernet header moved to the front, a tag behind it. */
	record(6, bpf_xdp_adjust_head(ctx, -8));
	__u8 *p = DATA(ctx);
	if ((void *)(p + 22) > END(ctx))
		return XDP_ABORTED;
#pragma clang loop unroll(full)
	for (int i = 0; i < 14; i++)
		p[i] = p[i + 8];
	*(__u64 *)(p + 14) = 0x0807060504030201ULL;

	/* Tail: 106 bytes now. */
	record(7, bpf_xdp_adjust_tail(ctx, 3423)); /* -EINVAL: past the frame */
	record(8, bpf_xdp_adjust_tail(ctx, -93));  /* -EINVAL: 13 bytes left */
	record(9, bpf_xdp_adjust_tail(ctx, -6));   /* 0: 100 bytes */
	record(10, bpf_xdp_adjust_tail(ctx, 10));  /* 0: 110 bytes, the new ones zero */
	record(11, bpf_xdp_adjust_tail(ctx, 0));   /* 0 */
	p = DATA(ctx);
	if ((void *)(p + 110) > END(ctx))
		return XDP_ABORTED;
	*(__u32 *)(p + 106) = 0xcefaedfe;

	/* Metadata. */
	record(12, bpf_xdp_adjust_meta(ctx, -6));  /* -EACCES: not a multiple of 4 */
	record(13, bpf_xdp_adjust_meta(ctx, -16)); /* 0 */
	__u64 *m = META(ctx);
	if ((void *)(m + 2) > DATA(ctx))
		return XDP_ABORTED;
	m[0] = 0x1122334455667788ULL;
	m[1] = (__u64)(END(ctx) - DATA(ctx));
	m = META(ctx);
	if ((void *)(m + 2) > DATA(ctx))
		return XDP_ABORTED;
	seen->first[0] = m[0];
	seen->first[1] = m[1];
	record(14, bpf_xdp_adjust_meta(ctx, -256)); /* past the headroom */
	record(15, bpf_xdp_adjust_head(ctx, -4));   /* the metadata moves along */
	m = META(ctx);
	if ((void *)(m + 2) > DATA(ctx))
		return XDP_ABORTED;
	seen->after_head_move[0] = m[0];
	seen->after_head_move[1] = m[1];
	p = DATA(ctx);
	if ((void *)(p + 4) > END(ctx))
		return XDP_ABORTED;
	*(__u32 *)p = 0xaabbccdd;
	record(16, bpf_xdp_adjust_meta(ctx, 8));    /* 0: shrink to 8 bytes */
	record(17, bpf_xdp_adjust_meta(ctx, 16));   /* -EINVAL: past data */
	seen->final_len = (__u64)(END(ctx) - DATA(ctx));
	seen->final_meta_len = (__u64)(DATA(ctx) - META(ctx));
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
