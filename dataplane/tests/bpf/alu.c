// bpf-cflags: -mcpu=v3
/* Every 64-bit ALU operation, with register (X) and immediate (K) sources, on operands read from
 * the packet so neither clang nor the verifier can fold them. Results land in `alu64_results`
 * (one array entry holding 64 u64 slots, in the order of the R_* indices) and the first eight
 * are also written back into the packet's payload.
 *
 * Kernel rules exercised: unsigned division by zero gives 0, modulo by zero leaves the dividend;
 * shifts by a register use the low 6 bits (masked here, as C requires); arsh copies the sign bit.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SLOTS 64

struct alu_out {
	__u64 r[SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct alu_out);
} alu64_results SEC(".maps");

/* A zero the compiler cannot see through: division and modulo by a register holding 0. */
volatile __u64 runtime_zero;

SEC("xdp")
int alu64(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct alu_out *o;

	if (data + 98 > end)
		return XDP_ABORTED;
	o = bpf_map_lookup_elem(&alu64_results, &key);
	if (!o)
		return XDP_ABORTED;

	/* a: top bit set (negative as s64); b: small and nonzero; c: a shift amount (0..63). */
	__u64 a = *(__u64 *)(data + 0) ^ 0xfedcba9876543210ULL;
	__u64 b = (*(__u32 *)(data + 26) & 0xffff) | 3;
	__u64 c = *(__u8 *)(data + 47) & 63;
	/* d, e: the operands of the modulo operations, kept apart from the divisions' so clang
	 * cannot compute a remainder as a - (a / b) * b. */
	__u64 d = *(__u64 *)(data + 30) | 5;
	__u64 e = *(__u64 *)(data + 14) + 0x1122334455667788ULL;
	__u64 z = runtime_zero;
	__s64 sa = (__s64)a;

	o->r[0] = a + b;
	o->r[1] = a + 0x12345;
	o->r[2] = a - b;
	o->r[3] = b - a;
	o->r[4] = a * b;
	o->r[5] = a * 1000003;
	o->r[6] = a / b;
	o->r[7] = a / 13;
	o->r[8] = e % d;
	o->r[9] = e % 13;
	o->r[10] = a | b;
	o->r[11] = a | 0x0f0f;
	o->r[12] = a & b;
	o->r[13] = a & 0xff00ff;
	o->r[14] = a << c;
	o->r[15] = a << 7;
	o->r[16] = a >> c;
	o->r[17] = a >> 9;
	o->r[18] = (__u64)(sa >> c);
	o->r[19] = (__u64)(sa >> 9);
	o->r[20] = a ^ b;
	o->r[21] = d ^ 0x5a5a;
	o->r[22] = -a;
	o->r[23] = a / z;  /* 0 */
	o->r[24] = e % z;  /* e */
	o->r[25] = b / z;
	o->r[26] = d % z;
	o->r[27] = z / b;
	o->r[28] = bpf_htons((__u16)a);
	o->r[29] = bpf_htonl((__u32)a);
	o->r[30] = bpf_cpu_to_be64(a);
	o->r[31] = bpf_ntohs((__u16)(a >> 16));
	o->r[32] = bpf_ntohl((__u32)(a >> 8));
	o->r[33] = bpf_be64_to_cpu(b);
	o->r[34] = __builtin_bswap16((__u16)b);
	o->r[35] = __builtin_bswap32((__u32)b);
	o->r[36] = __builtin_bswap64(b);
	o->r[37] = a * -1;
	o->r[38] = a & -16;
	o->r[39] = (a << 32) >> 32;
	o->r[40] = (__u64)((__s64)(a << 32) >> 32);
	o->r[41] = a + (a << c) - (b * c);
	o->r[42] = ~a;
	o->r[43] = a / 0xffffffffULL;
	o->r[44] = e % 0xfffffffbULL;
	o->r[45] = b * b * b * b * b;
	o->r[46] = a / (b << 40);
	o->r[47] = (__u64)(sa >> 63);
	o->r[48] = a >> 63;
	o->r[49] = c;
	o->r[50] = 0xffffffff80000000ULL;  /* lddw vs mov imm sign extension */
	o->r[51] = (__u64)-5;              /* mov with a negative immediate */
	o->r[52] = 0x7fffffff;
	o->r[53] = d - e;
	o->r[54] = (d << 3) - 0x7fff;

	/* Some results in the packet too. */
	__u64 *payload = data + 42;
	#pragma clang loop unroll(full)
	for (int i = 0; i < 7; i++)
		payload[i] = o->r[i];
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
