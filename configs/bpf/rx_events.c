// bpf-cflags: -D__TARGET_ARCH_x86
/* One event per received frame, as a ring-buffer record: the uprobe program on the dataplane's
 * own `rx` probe site (arguments: ifindex, queue, length, worker slot) copies them into a
 * `struct rx_event`. `dataplane` prints each record as a line as it comes, typed from the
 * object's BTF (`struct rx_event`, found by the map's name `rx_events` less its `s`):
 *
 *   @rx_events: { .ifindex = 5, .queue = 0, .len = 98, .worker = 0 }
 *
 * bpftrace equivalent: usdt:./dataplane:dataplane:rx { printf("%d %d %d %d\n", arg0, arg1, arg2, arg3); }
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct rx_event {
	__u32 ifindex;
	__u32 queue;
	__u32 len;
	__u32 worker;
};

/* Puts `struct rx_event` into the object's BTF (clang emits the types of globals, not of
 * locals), so the records print typed; the variable itself is never used. */
struct rx_event *rx_event_type __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} rx_events SEC(".maps");

SEC("uprobe/site:rx")
int rx_events_prog(struct pt_regs *ctx)
{
	struct rx_event *e = bpf_ringbuf_reserve(&rx_events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->ifindex = (__u32)PT_REGS_PARM1(ctx);
	e->queue = (__u32)PT_REGS_PARM2(ctx);
	e->len = (__u32)PT_REGS_PARM3(ctx);
	e->worker = (__u32)PT_REGS_PARM4(ctx);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
