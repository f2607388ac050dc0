// bpf-cflags: -mcpu=v2
/* Every 64-bit conditional jump (JEQ JNE JGT JGE JLT JLE JSGT JSGE JSLT JSLE; JSET as `&` then a
 * test, clang never emits JSET itself), with register and immediate sources, signed and
 * unsigned. -mcpu=v2 has JLT/JLE/JSLT/JSLE but no JMP32 class, so every compare is 64-bit.
 * Immediates are sign-extended to 64 bits before the compare (the -5 and 0x80000000 cases).
 *
 * The operands, derived from the packet, are stored in `jmp_results.ops` and every compare
 * re-reads them through a volatile pointer: the verifier then sees each compare on a fresh
 * unknown value, so the 2^N path combinations of the masks do not multiply. Each `masks` slot is
 * an 11-bit mask, one bit per condition, for one operand pair; `cls` records a small
 * data-dependent control-flow walk.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct jmp_out {
	__u64 ops[8];
	__u64 masks[32];
	__u64 cls;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct jmp_out);
} jmp_results SEC(".maps");

#define S(v) ((__s64)(v))
#define ALL(x, y)                                                                       \
	((__u64)((x) == (y)) << 0 | (__u64)((x) != (y)) << 1 | (__u64)((x) > (y)) << 2 |     \
	 (__u64)((x) >= (y)) << 3 | (__u64)((x) < (y)) << 4 | (__u64)((x) <= (y)) << 5 |      \
	 (__u64)(S(x) > S(y)) << 6 | (__u64)(S(x) >= S(y)) << 7 | (__u64)(S(x) < S(y)) << 8 | \
	 (__u64)(S(x) <= S(y)) << 9 | (__u64)(((x) & (y)) != 0) << 10)

SEC("xdp")
int jmp64(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct jmp_out *o;

	if (data + 98 > end)
		return XDP_ABORTED;
	o = bpf_map_lookup_elem(&jmp_results, &key);
	if (!o)
		return XDP_ABORTED;

	o->ops[0] = *(__u64 *)(data + 0) | 0x8000000000000000ULL; /* A: negative as s64 */
	o->ops[1] = *(__u16 *)(data + 16) + 5;                    /* B: small positive */
	o->ops[2] = *(__u16 *)(data + 16) + 5;                    /* B2: equal to B */
	o->ops[3] = 0 - o->ops[1];                                /* N: small negative */
	o->ops[4] = *(__u8 *)(data + 42 + 5);                     /* F: 5 in the test frame */
	o->ops[5] = *(__u64 *)(data + 42);                        /* G, H: full range */
	o->ops[6] = *(__u64 *)(data + 50);
	o->ops[7] = 0;

	volatile __u64 *v = o->ops;
#define A v[0]
#define B v[1]
#define B2 v[2]
#define N v[3]
#define F v[4]
#define G v[5]
#define H v[6]
#define Z v[7]
	o->masks[0] = ALL(A, B);
	o->masks[1] = ALL(B, A);
	o->masks[2] = ALL(B, B2);
	o->masks[3] = ALL(N, B);
	o->masks[4] = ALL(B, N);
	o->masks[5] = ALL(A, N);
	o->masks[6] = ALL(N, N);
	o->masks[7] = ALL(Z, B);
	o->masks[8] = ALL(G, H);
	o->masks[9] = ALL(H, G);
	o->masks[10] = ALL(F, 5);
	o->masks[11] = ALL(F, 4);
	o->masks[12] = ALL(F, 6);
	o->masks[13] = ALL(B, -5);
	o->masks[14] = ALL(N, -5);
	o->masks[15] = ALL(A, 0x7fffffff);
	o->masks[16] = ALL(B, (__u64)(__s64)(__s32)0x80000000);
	o->masks[17] = ALL(A, (__u64)(__s64)(__s32)0x80000000);
	o->masks[18] = ALL(F, 0);
	o->masks[19] = ALL(G, 5);
	o->masks[20] = ALL(G, -5);
	o->masks[21] = ALL(H, 0x8000);
	o->masks[22] = ALL(H, -0x8000);
	o->masks[23] = ALL(Z, 0);

	/* Data-dependent control flow: a tiny classifier with fall-through and back-merging. */
	__u64 cls = 0;
	if (F > 3) {
		cls |= 1;
		if (S(N) < 0)
			cls |= 2;
		else
			cls |= 4;
	} else if (F == 0) {
		cls |= 8;
	}
	if (B & 1)
		cls |= 16;
	if (!(A & 0x10))
		cls |= 32;
	if (S(G) >= 0x10000)
		cls |= 64;
	if (S(H) <= -3)
		cls |= 128;
	if (G <= 0x1000)
		cls |= 256;
	if (H >= 77)
		cls |= 512;
	if (S(G) < 1000)
		cls |= 1024;
	if (S(H) > -1000)
		cls |= 2048;
	o->cls = cls;
	return cls & 2 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
