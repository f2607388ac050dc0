// bpf-cflags: -D__TARGET_ARCH_x86
/* The seed's one-liner, `@[dev] = lhist(cpu, 0, 128, 1)` on packet receive, as a uprobe program
 * on the dataplane's own `rx` probe site (arguments: ifindex, queue, length, worker slot).
 * The map has bpftrace's lhist layout: key { group = ifindex, bucket }, bucket 0 below 0,
 * bucket i in 1..=128 for cpu i - 1, bucket 129 for 128 and above. `dataplane` prints it at
 * exit the way bpftrace prints an lhist (configs/trace.toml).
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct hist_key {
	__u32 group;
	__u32 bucket;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct hist_key);
	__type(value, __u64);
} rx_cpu SEC(".maps");

SEC("uprobe/site:rx")
int rx_cpu_hist(struct pt_regs *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct hist_key k = {
		.group = (__u32)PT_REGS_PARM1(ctx),
		.bucket = cpu >= 128 ? 129 : cpu + 1,
	};
	__u64 *v = bpf_map_lookup_elem(&rx_cpu, &k);
	if (v) {
		__sync_fetch_and_add(v, 1);
		return 0;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&rx_cpu, &k, &one, BPF_NOEXIST) != 0) {
		/* Another worker created it first. */
		v = bpf_map_lookup_elem(&rx_cpu, &k);
		if (v)
			__sync_fetch_and_add(v, 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
