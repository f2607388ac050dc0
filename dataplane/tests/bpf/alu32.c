// bpf-cflags: -mcpu=v3
/* Every 32-bit ALU operation (the `w` registers of -mcpu=v3), register and immediate sources, on
 * operands read from the packet. Results (each zero-extended into a u64 slot, as every 32-bit
 * operation zero-extends its destination) land in `alu32_results`.
 *
 * Kernel rules exercised: 32-bit division by zero gives 0, modulo by zero leaves the low 32 bits
 * of the dividend (zero-extended); arsh on w registers copies bit 31.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SLOTS 48

struct alu32_out {
	__u64 r[SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct alu32_out);
} alu32_results SEC(".maps");

volatile __u32 runtime_zero32;

SEC("xdp")
int alu32(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct alu32_out *o;

	if (data + 98 > end)
		return XDP_ABORTED;
	o = bpf_map_lookup_elem(&alu32_results, &key);
	if (!o)
		return XDP_ABORTED;

	/* a: bit 31 set; b: small, nonzero; c: shift amount 0..31; d, e: modulo operands. */
	__u32 a = *(__u32 *)(data + 2) | 0x80000000u;
	__u32 b = (*(__u32 *)(data + 26) & 0xfff) | 3;
	__u32 c = *(__u8 *)(data + 49) & 31;
	__u32 d = *(__u32 *)(data + 30) | 7;
	__u32 e = *(__u32 *)(data + 14) + 0x9abcdef0u;
	__u32 z = runtime_zero32;
	__s32 sa = (__s32)a;
	/* A 64-bit value whose upper half a 32-bit operation must discard. */
	__u64 wide = *(__u64 *)(data + 50) | 0xffffffff00000000ULL;

	o->r[0] = a + b;
	o->r[1] = a + 0x12345;
	o->r[2] = a - b;
	o->r[3] = b - a;
	o->r[4] = a * b;
	o->r[5] = a * 1000003u;
	o->r[6] = a / b;
	o->r[7] = a / 13;
	o->r[8] = e % d;
	o->r[9] = e % 13;
	o->r[10] = a | b;
	o->r[11] = e | 0x0f0f;
	o->r[12] = a & b;
	o->r[13] = e & 0xff00ff;
	o->r[14] = a << c;
	o->r[15] = e << 7;
	o->r[16] = a >> c;
	o->r[17] = e >> 9;
	o->r[18] = (__u32)(sa >> c);
	o->r[19] = (__u32)(sa >> 9);
	o->r[20] = a ^ b;
	o->r[21] = e ^ 0x5a5a;
	o->r[22] = -a;
	o->r[23] = a / z;  /* 0 */
	o->r[24] = e % z;  /* e */
	o->r[25] = b / z;
	o->r[26] = d % z;  /* d */
	o->r[27] = z / b;
	o->r[28] = bpf_htons((__u16)a);
	o->r[29] = bpf_htonl(a);
	o->r[30] = __builtin_bswap32(e);
	o->r[31] = (__u32)wide + 1;          /* upper half gone */
	o->r[32] = (__u32)wide * 3;
	o->r[33] = (__u32)(wide >> 4) >> 4;
	o->r[34] = ~e;
	o->r[35] = a * -1;
	o->r[36] = (__u32)-7;
	o->r[37] = 0xffffffffu / b;
	o->r[38] = c;
	o->r[39] = (__u32)(sa >> 31);
	o->r[40] = e - 0x7fff;
	o->r[41] = (d << 3) - e;
	o->r[42] = (__u32)(wide >> 32) + (__u32)wide;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
