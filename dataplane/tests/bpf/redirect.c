// bpf-cflags: -mcpu=v3
/* bpf_redirect and bpf_redirect_map on a DEVMAP, a DEVMAP_HASH and an XSKMAP, driven by the
 * frame: after the Ethernet header, byte 14 picks the helper (low two bits; bits 2-3 pick the
 * second call's), byte 15 bit 0 asks for a second call (key + 1, same flags: the later call's
 * target wins), bytes 16-23 are the key and 24-31 the flags (both u64, little-endian). Every
 * helper return value is added into `returns` (slot = call number), so the map comparison
 * catches the first call's result too; the program returns the last call's.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} tx_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* [call] = sum of return values << 8 | number of calls, per call number. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} returns SEC(".maps");

static __always_inline long one(__u8 op, __u64 key, __u64 flags)
{
	switch (op & 3) {
	case 0:
		return bpf_redirect(key, flags);
	case 1:
		return bpf_redirect_map(&tx_ports, key, flags);
	case 2:
		return bpf_redirect_map(&tx_hash, key, flags);
	default:
		return bpf_redirect_map(&xsks, key, flags);
	}
}

static __always_inline void record(__u32 call, long r)
{
	__u64 *v = bpf_map_lookup_elem(&returns, &call);

	if (v)
		*v += ((__u64)r << 8) | 1;
}

SEC("xdp")
int redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *p = data;

	if (data + 32 > end)
		return XDP_PASS;
	__u8 op = p[14];
	__u8 twice = p[15] & 1;
	__u64 key = *(__u64 *)(p + 16);
	__u64 flags = *(__u64 *)(p + 24);

	long r = one(op, key, flags);
	record(0, r);
	if (twice) {
		r = one(op >> 2, key + 1, flags);
		record(1, r);
	}
	return r;
}

char LICENSE[] SEC("license") = "GPL";
