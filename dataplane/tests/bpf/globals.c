// bpf-cflags: -mcpu=v3
/* Global data in all three sections: a .rodata lookup table indexed at run time, `const volatile`
 * configuration values (.rodata, which a loader may override before load), .data counters with
 * non-zero initial values, and .bss arrays the program fills. The verdict comes from the
 * configuration. Everything is read back from the global-data maps.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* .rodata: a table (clang keeps it in memory because the index is only known at run time). */
static const __u32 crc_table[16] = {
	0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
	0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
};

/* .rodata: configuration a loader could rewrite before load. */
const volatile __u32 cfg_verdict = XDP_TX;
const volatile __u8 cfg_bytes_to_hash = 24;
const volatile __u64 cfg_salt = 0x5eed5eed5eed5eedULL;

/* .data: counters with initial values. */
__u64 packets_seen = 1000;
__u32 bytes_seen = 7;
__u16 last_len = 0xffff;

/* .bss: arrays written by the program. */
__u8 last_src_mac[6];
__u32 nibble_hist[16];
__u64 crc_out;

SEC("xdp")
int globals(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	__u32 crc = 0xffffffff;
	__u32 i;

	if (data + 64 > end)
		return XDP_ABORTED;

	packets_seen++;
	bytes_seen += (__u32)(end - data);
	last_len = (__u16)(end - data);
	__builtin_memcpy(last_src_mac, p + 6, 6);

	/* A nibble-wise CRC-32 over the first cfg_bytes_to_hash bytes (at most 64). */
	for (i = 0; i < 64; i++) {
		if (i >= cfg_bytes_to_hash)
			break;
		__u8 b = p[i];
		crc = crc_table[(crc ^ b) & 15] ^ (crc >> 4);
		crc = crc_table[(crc ^ (b >> 4)) & 15] ^ (crc >> 4);
		nibble_hist[b & 15]++;
	}
	crc_out = (__u64)~crc ^ cfg_salt;
	return cfg_verdict;
}

char LICENSE[] SEC("license") = "GPL";
