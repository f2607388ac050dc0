// bpf-cflags: -D__TARGET_ARCH_x86
/* CO-RE over a local, reduced and reordered struct pt_regs (as a vmlinux.h-style header would
 * give, minus most fields): the offsets clang emits (si at 0, di at 8) are wrong for the kernel's
 * layout until the loader resolves the .BTF.ext field relocations by name (di at 112, si at 104).
 * PARM1/PARM2 read through PT_REGS_PARM*_CORE (bpf_probe_read_kernel of &ctx->di: an add-imm
 * relocation) and through a plain ctx->si load (an ldx-offset relocation).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* What vmlinux.h defines: bpf_tracing.h then names the kernel's fields (di, si), not ptrace.h's. */
#define __VMLINUX_H__
struct pt_regs {
	unsigned long si;
	unsigned long di;
} __attribute__((preserve_access_index));

#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

enum { CORE_ARG1, CORE_ARG2, DIRECT_ARG2, SI_EXISTS, SI_SIZE, NSLOTS };

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

SEC("uprobe")
int core_args(struct pt_regs *ctx)
{
	put(CORE_ARG1, PT_REGS_PARM1_CORE(ctx));
	put(CORE_ARG2, PT_REGS_PARM2_CORE(ctx));
	put(DIRECT_ARG2, ctx->si);
	put(SI_EXISTS, bpf_core_field_exists(ctx->si));
	put(SI_SIZE, bpf_core_field_size(ctx->si));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
