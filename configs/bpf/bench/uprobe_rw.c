// bpf-cflags: -D__TARGET_ARCH_x86
/* The seed's __bench_write for the suite's uprobe table: bpf_probe_write_user of 8 bytes through
 * the probed function's first argument (a pointer to a u64 the benchmark owns), once and four
 * times, so that the difference prices one write (as read_user1 / read_user4 of
 * dataplane/tests/bpf/uprobe_args.c price a read). The same object runs in our uprobes and in
 * the kernel's.
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("uprobe")
int write_user1(struct pt_regs *ctx)
{
	__u64 v = PT_REGS_PARM2(ctx);
	return bpf_probe_write_user((void *)PT_REGS_PARM1(ctx), &v, sizeof(v));
}

SEC("uprobe")
int write_user4(struct pt_regs *ctx)
{
	__u64 v = PT_REGS_PARM2(ctx);
	void *p = (void *)PT_REGS_PARM1(ctx);
	long r = bpf_probe_write_user(p, &v, 8);
	r |= bpf_probe_write_user(p, &v, 8);
	r |= bpf_probe_write_user(p, &v, 8);
	r |= bpf_probe_write_user(p, &v, 8);
	return r;
}

char LICENSE[] SEC("license") = "GPL";
