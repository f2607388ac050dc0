// bpf-cflags: -mcpu=v3
/* Bounded loops the verifier walks iteration by iteration (unrolling disabled so the back-edges
 * stay in the bytecode): a byte sum over the payload with a packet bounds check inside the loop,
 * a nested loop over a stack matrix, a data-dependent early exit (count leading zero bits), a
 * while loop with a computed trip count (the bit length of a payload word) and a do-while. Results in
 * `loop_results`; the payload's first 8 bytes are replaced by a running xor.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct loop_out {
	__u64 sum;
	__u64 matrix_trace;
	__u64 clz;
	__u64 bit_length;
	__u64 do_while;
	__u64 iterations;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loop_out);
} loop_results SEC(".maps");

SEC("xdp")
int loops(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct loop_out *o;
	__u64 iterations = 0;
	__u32 i, j;

	o = bpf_map_lookup_elem(&loop_results, &key);
	if (!o)
		return XDP_ABORTED;

	/* Sum the payload, bounds-checking each byte; stops at the end of a short packet. */
	__u64 sum = 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < 64; i++) {
		__u8 *p = data + 34 + i;
		if ((void *)(p + 1) > end)
			break;
		sum = sum * 31 + *p;
		iterations++;
	}
	o->sum = sum;

	/* Nested loops over a 4x4 matrix on the stack. */
	__u32 m[4][4];
#pragma clang loop unroll(disable)
	for (i = 0; i < 4; i++) {
#pragma clang loop unroll(disable)
		for (j = 0; j < 4; j++) {
			m[i][j] = (__u32)(sum >> (i + j)) & 0xff;
			iterations++;
		}
	}
	__u64 trace = 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < 4; i++)
		trace = trace * 1000 + m[i][i] + m[i][3 - i];
	o->matrix_trace = trace;

	/* Data-dependent exit. */
	if (data + 50 > end)
		return XDP_DROP;
	__u64 v = *(__u64 *)(data + 42) >> 3;
	__u64 clz = 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < 64; i++) {
		if (v & (1ULL << 63))
			break;
		v <<= 1;
		clz++;
	}
	o->clz = clz;

	/* A while loop whose trip count depends on the data (the bit length), capped for the
	 * verifier. */
	__u64 n = *(__u32 *)(data + 44);
	__u32 steps = 0;
#pragma clang loop unroll(disable)
	while (n != 0 && steps < 40) {
		n >>= 1;
		steps++;
	}
	o->bit_length = steps;

	/* do-while writing to the packet. */
	__u8 *pl = data + 42;
	__u8 acc = 0x5a;
	i = 0;
#pragma clang loop unroll(disable)
	do {
		acc ^= pl[i];
		pl[i] = acc;
		i++;
	} while (i < 8);
	o->do_while = acc;
	o->iterations = iterations;
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
