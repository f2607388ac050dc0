// bpf-cflags: -D__TARGET_ARCH_x86
/* The dataplane's own probe sites under traffic (tests/uprobe_sites.rs): what the tx and drop
 * sites pass, recorded by programs attached to them, and an XDP program that sends frames
 * longer than 100 bytes back (XDP_TX) and passes the rest (dropped with pass = "drop").
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

enum { HITS, SUM, IFINDEX, QUEUE, SLOT, NSLOTS };

struct seen_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NSLOTS);
	__type(key, __u32);
	__type(value, __u64);
};

struct seen_map tx_seen SEC(".maps");
struct seen_map drop_seen SEC(".maps");

/* Drops by reason (the site's third argument). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} drop_reasons SEC(".maps");

static __always_inline void put(void *map, __u32 k, __u64 v)
{
	bpf_map_update_elem(map, &k, &v, BPF_ANY);
}

static __always_inline void add(void *map, __u32 k, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, &k);
	if (v)
		__sync_fetch_and_add(v, n);
}

static __always_inline void record(void *map, struct pt_regs *ctx, __u64 n)
{
	add(map, HITS, 1);
	add(map, SUM, n);
	put(map, IFINDEX, PT_REGS_PARM1(ctx));
	put(map, QUEUE, PT_REGS_PARM2(ctx));
	put(map, SLOT, PT_REGS_PARM4(ctx));
}

SEC("uprobe/site:tx")
int on_tx(struct pt_regs *ctx)
{
	record(&tx_seen, ctx, PT_REGS_PARM3(ctx));
	return 0;
}

SEC("uprobe/site:drop")
int on_drop(struct pt_regs *ctx)
{
	record(&drop_seen, ctx, 1);
	__u32 reason = PT_REGS_PARM3(ctx);
	if (reason < 16)
		add(&drop_reasons, reason, 1);
	return 0;
}

SEC("xdp")
int tx_long_pass_short(struct xdp_md *ctx)
{
	return ctx->data_end - ctx->data > 100 ? XDP_TX : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
