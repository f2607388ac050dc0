// Loader test: a legacy `maps` section with a hand-written `struct bpf_map_def` (one with an extra
// field), and global data: .rodata with const volatile variables, .data, .bss, string literals.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_map_def_legacy {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
	unsigned int inner_map_idx;
	unsigned int numa_node;
};

struct bpf_map_def_legacy SEC("maps") legacy_hash = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 64,
	.map_flags = BPF_F_NO_PREALLOC,
};

struct bpf_map_def_legacy SEC("maps") legacy_array = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 16,
	.max_entries = 2,
};

const volatile __u32 threshold = 100;
const volatile __u8 verdict = XDP_DROP;
const volatile __u64 magic = 0x1122334455667788ULL;
__u64 hits = 7;
__u32 seen;
__u64 last_len;

SEC("xdp")
int legacy_prog(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&legacy_hash, &key);
	if (v)
		*v += len;
	void *a = bpf_map_lookup_elem(&legacy_array, &key);
	if (a)
		hits += magic;
	seen++;
	last_len = len;
	if (len > threshold) {
		bpf_printk("long packet %u", len);
		return verdict;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
