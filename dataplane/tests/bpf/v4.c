// bpf-cflags: -mcpu=v4
/* The cpu v4 instructions: signed division and modulo (sdiv/smod, 64- and 32-bit, register and
 * immediate), incl. by zero (0 / dividend unchanged, as for the unsigned forms) and the overflow
 * case INT_MIN / -1 (the kernel gives INT_MIN, and INT_MIN % -1 gives 0); sign-extending moves
 * (movsx from 8, 16, 32 bits, to 64 and to 32 bits); sign-extending loads (ldxs 8/16/32) from the
 * packet, the stack and a map value; unconditional byte swaps (bswap16/32/64). Results in
 * `v4_results`.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct v4_out {
	__s64 sdiv[28];
	__s64 movsx[12];
	__s64 ldsx[12];
	__u64 bswap[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct v4_out);
} v4_results SEC(".maps");

/* Run-time constants the compiler cannot fold: 0, -1 and the minimum values. */
volatile __s64 zero64 = 0;
volatile __s64 minus_one = -1;
volatile __s64 min64 = (-0x7fffffffffffffffLL - 1);
volatile __s32 min32 = (-0x7fffffff - 1);

SEC("xdp")
int v4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct v4_out *o;

	if (data + 98 > end)
		return XDP_ABORTED;
	o = bpf_map_lookup_elem(&v4_results, &key);
	if (!o)
		return XDP_ABORTED;

	__s64 a = -(__s64)(*(__u32 *)(data + 42) | 1);      /* negative */
	__s64 b = (__s64)(*(__u16 *)(data + 16) & 0xff) + 3; /* positive */
	__s64 nb = -b;
	__s32 a32 = (__s32)a, b32 = (__s32)b, nb32 = -(__s32)b;
	__s64 z = zero64, m1 = minus_one;

	o->sdiv[0] = a / b;
	o->sdiv[1] = a % b;
	o->sdiv[2] = a / nb;
	o->sdiv[3] = (a + 1) % nb;
	o->sdiv[4] = b / nb;
	o->sdiv[5] = a / -7;
	o->sdiv[6] = a % -7;
	o->sdiv[7] = b / 3;
	o->sdiv[8] = a / z;          /* 0 */
	o->sdiv[9] = (a - 1) % z;    /* dividend */
	o->sdiv[10] = min64 / m1;    /* INT64_MIN: the kernel patches the overflow */
	o->sdiv[11] = min64 % m1;    /* 0 */
	o->sdiv[12] = a32 / b32;
	o->sdiv[13] = (a32 + 1) % b32;
	o->sdiv[14] = a32 / nb32;
	o->sdiv[15] = (a32 - 1) % nb32;
	o->sdiv[16] = a32 / -5;
	o->sdiv[17] = (a32 + 2) % -5;
	o->sdiv[18] = a32 / (__s32)z;
	o->sdiv[19] = (a32 + 3) % (__s32)z;
	o->sdiv[20] = min32 / (__s32)m1;
	o->sdiv[21] = min32 % (__s32)m1;
	o->sdiv[22] = (__u32)(a32 / b32);   /* 32-bit result zero-extended */
	o->sdiv[23] = (__u32)((a32 + 4) % b32);
	/* Immediate divisors on operands of unknown sign (clang turns known-sign ones unsigned). */
	__s64 g = *(__s64 *)(data + 50) ^ (__s64)0x8000000000000000ULL;
	o->sdiv[24] = g / 1000;
	o->sdiv[25] = g % 1000;
	o->sdiv[26] = g / -3;
	o->sdiv[27] = g % -3;

	/* movsx: sign-extend the low 8/16/32 bits of a register. */
	__u64 w = *(__u64 *)(data + 0) ^ 0x00008080f0f08080ULL;
	volatile __u64 vw = w;
	__u64 r = vw;
	o->movsx[0] = (__s8)r;
	o->movsx[1] = (__s16)r;
	o->movsx[2] = (__s32)r;
	o->movsx[3] = (__s8)(r >> 8);
	o->movsx[4] = (__s16)(r >> 16);
	o->movsx[5] = (__s32)(r >> 16);
	o->movsx[6] = (__u32)(__s32)(__s8)r;     /* movsx to 32 bits, then zero-extended */
	o->movsx[7] = (__u32)(__s32)(__s16)(r >> 8);
	o->movsx[8] = (__s8)(r >> 40);
	o->movsx[9] = (__s16)(r >> 48);

	/* ldsx: sign-extending loads from the packet, the stack and a map value. */
	o->ldsx[0] = *(__s8 *)(data + 44);
	o->ldsx[1] = *(__s16 *)(data + 88);
	o->ldsx[2] = *(__s32 *)(data + 94 - 4);
	o->ldsx[3] = *(__s8 *)(data + 97);
	volatile __u64 st = w;
	o->ldsx[4] = *(volatile __s8 *)&st;
	o->ldsx[5] = *(volatile __s16 *)((__u8 *)&st + 2);
	o->ldsx[6] = *(volatile __s32 *)((__u8 *)&st + 4);
	o->bswap[5] = w;
	o->ldsx[7] = *(volatile __s8 *)((__u8 *)&o->bswap[5] + 1);
	o->ldsx[8] = *(volatile __s16 *)((__u8 *)&o->bswap[5] + 2);
	o->ldsx[9] = *(volatile __s32 *)((__u8 *)&o->bswap[5] + 2);
	o->ldsx[10] = (__s32)*(volatile __s8 *)&st;  /* sign-extended load, used as 32 bits */

	/* Unconditional byte swaps. */
	o->bswap[0] = __builtin_bswap16((__u16)w);
	o->bswap[1] = __builtin_bswap32((__u32)w);
	o->bswap[2] = __builtin_bswap64(w);
	o->bswap[3] = __builtin_bswap16((__u16)(w >> 24));
	o->bswap[4] = __builtin_bswap32((__u32)(w >> 8));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
