// bpf-cflags: -mcpu=v3
/* bpf_csum_diff: the values it returns and what programs build from them. Sums over the IPv4
 * header and the payload straight from the packet, with and without a seed (incl. all ones); a
 * diff (old word -> new word) as used for incremental updates; from-only and to-only forms; sizes
 * that are not multiples of 4; no buffers at all. The folded IPv4 checksum is written into the
 * header, so `data_out` carries it. Results in `csum_results`.
 *
 * Linux 6.12+ (so 6.18) returns the ones'-complement sum already folded to 16 bits (not inverted):
 * to only: fold(csum_partial(to, seed)); from only: fold(~csum_partial(from, ~seed)); both:
 * fold(csum_partial(to, seed) - csum_partial(from, 0)); neither: the seed itself. Sizes need not
 * be multiples of 4 any more (older kernels returned the 32-bit partial sum and -EINVAL there).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct csum_out {
	__s64 raw[12];
	__u64 folded[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct csum_out);
} csum_results SEC(".maps");

static __always_inline __u16 fold(__s64 csum)
{
	__u64 s = (__u32)csum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

SEC("xdp")
int csum(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct csum_out *o;

	if (data + 98 > end)
		return XDP_ABORTED;
	o = bpf_map_lookup_elem(&csum_results, &key);
	if (!o)
		return XDP_ABORTED;

	__be32 *ip = data + 14;
	__be32 *payload = data + 42;

	/* The IPv4 header with its checksum field zeroed, then folded and stored. */
	*(__u16 *)((void *)ip + 10) = 0;
	o->raw[0] = bpf_csum_diff(0, 0, ip, 20, 0);
	__u16 ipsum = fold(o->raw[0]);
	*(__u16 *)((void *)ip + 10) = ipsum;
	o->folded[0] = ipsum;
	/* Re-summing a header with a correct checksum folds to 0. */
	o->raw[1] = bpf_csum_diff(0, 0, ip, 20, 0);
	o->folded[1] = fold(o->raw[1]);

	/* The payload with a seed, and with an all-ones seed (end-around carry). */
	o->raw[2] = bpf_csum_diff(0, 0, payload, 56, 0x12345678);
	o->raw[3] = bpf_csum_diff(0, 0, payload, 56, 0xffffffff);

	/* Incremental update of one word: diff(old -> new), seeded with the old checksum. */
	__be32 old_word = ip[3];          /* source address */
	__be32 new_word = 0x0a00a8c0;     /* 192.168.0.10, as stored */
	o->raw[4] = bpf_csum_diff(&old_word, 4, &new_word, 4, 0);
	o->raw[5] = bpf_csum_diff(&old_word, 4, &new_word, 4, ~(__u32)ipsum & 0xffff);
	o->folded[2] = fold(o->raw[5]);

	/* from only (subtracting), to only from the stack, the whole 8-byte ICMP header. */
	__u32 words[4] = {0xffffffff, 0, 0x80000000, 0x00010001};
	o->raw[6] = bpf_csum_diff(words, 16, 0, 0, 0);
	o->raw[7] = bpf_csum_diff(0, 0, words, 16, 0);
	o->raw[8] = bpf_csum_diff((void *)data + 34, 8, 0, 0, 0xdead);

	/* Sizes that are not multiples of 4 (accepted since 6.12), and no buffers (the seed). */
	o->raw[9] = bpf_csum_diff(words, 3, 0, 0, 0);
	o->raw[10] = bpf_csum_diff(0, 0, words, 6, 0);
	o->raw[11] = bpf_csum_diff(0, 0, 0, 0, 0x7777);
	o->folded[3] = fold(bpf_csum_diff(0, 0, payload, 56, 0));
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
