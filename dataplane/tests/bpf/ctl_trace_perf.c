// bpf-cflags: -D__TARGET_ARCH_x86
/* A record per received frame through bpf_perf_event_output (BPF_F_CURRENT_CPU: the worker's
 * own slot) on the dataplane's `rx` probe site, for the control tests: `dataplane trace` prints
 * each as a line, typed as `struct frame_rec` (named with --print frames:events:frame_rec, as the
 * map's name does not name it). max_entries 0: one slot per CPU, as libbpf sizes it.
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct frame_rec {
	__u32 ifindex;
	__u16 len;
	__u8 queue;
	__u8 kind;
};

/* Puts `struct frame_rec` into the object's BTF. */
struct frame_rec *frame_rec_type __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} frames SEC(".maps");

SEC("uprobe/site:rx")
int ctl_trace_perf(struct pt_regs *ctx)
{
	struct frame_rec r = {
		.ifindex = (__u32)PT_REGS_PARM1(ctx),
		.len = (__u16)PT_REGS_PARM3(ctx),
		.queue = (__u8)PT_REGS_PARM2(ctx),
		.kind = 7,
	};
	bpf_perf_event_output(ctx, &frames, BPF_F_CURRENT_CPU, &r, sizeof(r));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
