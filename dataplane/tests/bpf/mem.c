// bpf-cflags: -mcpu=v4
/* Loads and stores of every width (u8, u16, u32, u64) on the three kinds of memory an XDP program
 * touches: the packet, the stack and a map value; register stores and immediate stores (BPF_ST,
 * which clang emits only for -mcpu=v4); mixed
 * widths over the same bytes (little-endian layout). Results land in `mem_results`; the packet's
 * payload (offset 42 onwards) is rewritten too, so `data_out` shows the packet stores.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct mem_out {
	__u64 pkt_loads[8];
	__u64 stack_loads[12];
	__u8 scratch[32];	/* written at every width, then read back at every width */
	__u64 value_loads[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mem_out);
} mem_results SEC(".maps");

SEC("xdp")
int mem(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct mem_out *o;

	if (data + 98 > end)
		return XDP_ABORTED;
	o = bpf_map_lookup_elem(&mem_results, &key);
	if (!o)
		return XDP_ABORTED;

	/* Packet loads, aligned and not. */
	o->pkt_loads[0] = *(__u8 *)(data + 23);
	o->pkt_loads[1] = *(__u16 *)(data + 12);
	o->pkt_loads[2] = *(__u16 *)(data + 43);
	o->pkt_loads[3] = *(__u32 *)(data + 26);
	o->pkt_loads[4] = *(__u32 *)(data + 29);
	o->pkt_loads[5] = *(__u64 *)(data + 42);
	o->pkt_loads[6] = *(__u64 *)(data + 87);
	o->pkt_loads[7] = *(__u8 *)(data + 97);

	/* Packet stores: registers of each width, then immediates of each width. */
	__u8 *p = data + 42;
	__u64 x = *(__u64 *)(data + 0);
	*(__u8 *)(p + 0) = (__u8)x;
	*(__u16 *)(p + 1) = (__u16)(x >> 8);
	*(__u32 *)(p + 3) = (__u32)(x >> 16);
	*(__u64 *)(p + 7) = x ^ 0xffffffffffffffffULL;
	*(volatile __u8 *)(p + 16) = 0xa1;
	*(volatile __u16 *)(p + 17) = 0xb2c3;
	*(volatile __u32 *)(p + 20) = 0xd4e5f607;
	*(volatile __u64 *)(p + 24) = 0x7fffffff;   /* fits a sign-extended imm */
	*(volatile __u64 *)(p + 32) = -2;           /* sign-extended imm: all ones but one */
	*(volatile __u32 *)(p + 40) = 0x80000000u;

	/* Stack: write at one width, read at others. */
	volatile __u64 st[4];
	st[0] = x;
	st[1] = 0x1122334455667788ULL;
	*(volatile __u32 *)((__u8 *)st + 16) = 0xaabbccdd;
	*(volatile __u32 *)((__u8 *)st + 20) = (__u32)x;
	*(volatile __u16 *)((__u8 *)st + 24) = 0xeeff;
	*(volatile __u8 *)((__u8 *)st + 26) = 0x42;
	*(volatile __u8 *)((__u8 *)st + 27) = (__u8)(x >> 40);
	*(volatile __u32 *)((__u8 *)st + 28) = 0;
	o->stack_loads[0] = st[0];
	o->stack_loads[1] = *(volatile __u8 *)((__u8 *)st + 8);
	o->stack_loads[2] = *(volatile __u16 *)((__u8 *)st + 10);
	o->stack_loads[3] = *(volatile __u32 *)((__u8 *)st + 12);
	o->stack_loads[4] = st[2];
	o->stack_loads[5] = st[3];
	o->stack_loads[6] = *(volatile __u8 *)((__u8 *)st + 27);
	o->stack_loads[7] = *(volatile __u16 *)((__u8 *)st + 25);
	o->stack_loads[8] = *(volatile __u32 *)((__u8 *)st + 2);
	o->stack_loads[9] = *(volatile __u64 *)((__u8 *)st + 16);

	/* Map value: the same dance on `scratch`. */
	__u8 *s = o->scratch;
	*(volatile __u64 *)(s + 0) = x;
	*(volatile __u32 *)(s + 8) = 0xcafef00d;
	*(volatile __u16 *)(s + 12) = (__u16)x;
	*(volatile __u8 *)(s + 14) = 0x99;
	*(volatile __u8 *)(s + 15) = (__u8)(x >> 56);
	*(volatile __u64 *)(s + 16) = -1;
	*(volatile __u32 *)(s + 16) = (__u32)(x >> 32);
	*(volatile __u16 *)(s + 20) = 0x1234;
	*(volatile __u8 *)(s + 23) = 0;
	o->value_loads[0] = *(volatile __u8 *)(s + 3);
	o->value_loads[1] = *(volatile __u16 *)(s + 6);
	o->value_loads[2] = *(volatile __u32 *)(s + 12);
	o->value_loads[3] = *(volatile __u64 *)(s + 8);
	o->value_loads[4] = *(volatile __u64 *)(s + 16);
	o->value_loads[5] = *(volatile __u32 *)(s + 18);
	o->value_loads[6] = *(volatile __u16 *)(s + 15);
	o->value_loads[7] = *(volatile __u8 *)(s + 31);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
