// bpf-cflags: -D__TARGET_ARCH_x86
/* Uprobe and uretprobe programs for the uprobe tests: what the entry and the return see
 * (arguments, return value, function address), hit counters, a read through a pointer argument
 * (good or bad), and a map shared with an XDP program of the same object. Written the way
 * tracing programs are written for the kernel: BPF_KPROBE / BPF_KRETPROBE and PT_REGS_* from
 * bpf_tracing.h over <linux/ptrace.h>'s struct pt_regs.
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

enum {
	ARG1, ARG2, ARG3, ARG4, ARG5, ARG6, /* what the entry saw */
	ENTRIES, EXITS, RC, FUNC_IP, RET_FUNC_IP, /* hits and the return */
	READ_RET, READ_VAL, /* bpf_probe_read_user through PARM1 */
	PID_TGID,
	FLAGS, /* the probed code's flags (pt_regs.flags) */
	CPU, /* bpf_get_smp_processor_id: the slot */
	NSLOTS
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NSLOTS);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

static __always_inline void put(__u32 k, __u64 v)
{
	bpf_map_update_elem(&seen, &k, &v, BPF_ANY);
}

static __always_inline void bump(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&seen, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("uprobe")
int BPF_KPROBE(on_entry, __u64 a1, __u64 a2, __u64 a3, __u64 a4, __u64 a5)
{
	put(ARG1, a1);
	put(ARG2, a2);
	put(ARG3, a3);
	put(ARG4, a4);
	put(ARG5, a5);
	put(ARG6, ctx->r9); /* PT_REGS_PARM6: libbpf 1.1 lacks the macro */
	put(FUNC_IP, bpf_get_func_ip(ctx));
	put(PID_TGID, bpf_get_current_pid_tgid());
	put(FLAGS, ctx->eflags);
	put(CPU, bpf_get_smp_processor_id());
	bump(ENTRIES);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(on_exit, __u64 rc)
{
	put(RC, rc);
	put(RET_FUNC_IP, bpf_get_func_ip(ctx));
	bump(EXITS);
	return 0;
}

/* Only counts: the churn test's pair. */
SEC("uprobe")
int count_entry(struct pt_regs *ctx)
{
	bump(ENTRIES);
	return 0;
}

SEC("uretprobe")
int count_exit(struct pt_regs *ctx)
{
	bump(EXITS);
	return 0;
}

SEC("uprobe")
int read_arg(struct pt_regs *ctx)
{
	__u64 v = 0xdeadbeef;
	long r = bpf_probe_read_user(&v, sizeof(v), (const void *)PT_REGS_PARM1(ctx));
	put(READ_RET, r);
	put(READ_VAL, v);
	return 0;
}

/* The seed's benchmark program: return b + c. */
SEC("uprobe")
int sum(struct pt_regs *ctx)
{
	return PT_REGS_PARM2(ctx) + PT_REGS_PARM3(ctx);
}

/* bpf_probe_read_user of 8 bytes through PARM1, once and four times: the difference prices
 * one read. */
SEC("uprobe")
int read_user1(struct pt_regs *ctx)
{
	__u64 v = 0;
	bpf_probe_read_user(&v, sizeof(v), (const void *)PT_REGS_PARM1(ctx));
	return v;
}

SEC("uprobe")
int read_user4(struct pt_regs *ctx)
{
	__u64 v[4] = {};
	const __u64 *p = (const __u64 *)PT_REGS_PARM1(ctx);
	bpf_probe_read_user(&v[0], 8, p);
	bpf_probe_read_user(&v[1], 8, p);
	bpf_probe_read_user(&v[2], 8, p);
	bpf_probe_read_user(&v[3], 8, p);
	return v[0] + v[1] + v[2] + v[3];
}

/* A map counter: one atomic add per hit. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

SEC("uprobe")
int counter(struct pt_regs *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&calls, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

/* A map shared by an XDP program and a uprobe program: each counts its own runs and copies the
 * other's count, so each sees the other's updates. */
enum { XDP_RUNS, PROBE_RUNS, XDP_SAW_PROBE, PROBE_SAW_XDP, SHARED_SLOTS };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARED_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} shared SEC(".maps");

static __always_inline __u64 get_shared(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&shared, &k);
	return v ? *v : 0;
}

static __always_inline void count_and_copy(__u32 mine, __u32 other, __u32 saw)
{
	__u64 *v = bpf_map_lookup_elem(&shared, &mine);
	if (v)
		__sync_fetch_and_add(v, 1);
	__u64 o = get_shared(other);
	bpf_map_update_elem(&shared, &saw, &o, BPF_ANY);
}

SEC("xdp")
int xdp_side(struct xdp_md *ctx)
{
	count_and_copy(XDP_RUNS, PROBE_RUNS, XDP_SAW_PROBE);
	return XDP_PASS;
}

SEC("uprobe")
int probe_side(struct pt_regs *ctx)
{
	count_and_copy(PROBE_RUNS, XDP_RUNS, PROBE_SAW_XDP);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
