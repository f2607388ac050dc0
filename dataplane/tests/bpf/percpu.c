// bpf-cflags: -mcpu=v3
/* Per-CPU maps from a program: PERCPU_ARRAY counters incremented in place, PERCPU_HASH entries
 * inserted, updated, refused when full (-E2BIG) and deleted, each value recording
 * bpf_get_smp_processor_id(). A program only ever sees its own CPU's slot; a new hash element
 * starts zeroed on every other CPU. The tests pin the thread to CPU 0, so only slot 0 changes.
 * Helper return values land in `percpu_ret_codes`.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct flow_stats {
	__u64 packets;
	__u64 bytes;
	__u32 cpu;
	__u32 seen_before;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} cpu_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct flow_stats);
} cpu_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __s64);
} percpu_ret_codes SEC(".maps");

static __always_inline void record(__u32 step, __s64 rc)
{
	__s64 *slot = bpf_map_lookup_elem(&percpu_ret_codes, &step);

	if (slot)
		*slot = rc;
}

SEC("xdp")
int percpu(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 len = end - data;
	__u32 cpu = bpf_get_smp_processor_id();
	__u32 k;

	/* Counters: packets, bytes, and a per-CPU value set by update. */
	k = 0;
	__u64 *c = bpf_map_lookup_elem(&cpu_counters, &k);
	if (c)
		*c += 1;
	k = 1;
	c = bpf_map_lookup_elem(&cpu_counters, &k);
	if (c)
		__sync_fetch_and_add(c, len);
	k = 2;
	__u64 tag = 0x1000 + cpu;
	record(0, bpf_map_update_elem(&cpu_counters, &k, &tag, BPF_ANY));

	/* Flows keyed by the IP protocol, then two more keys to overflow max_entries = 2. */
	if (data + 34 > end)
		return XDP_ABORTED;
	__u32 proto = *(__u8 *)(data + 23);
	struct flow_stats *f = bpf_map_lookup_elem(&cpu_flows, &proto);
	if (f) {
		f->packets++;
		f->bytes += len;
		f->seen_before = 1;
	} else {
		struct flow_stats init = {.packets = 1, .bytes = len, .cpu = cpu};
		record(1, bpf_map_update_elem(&cpu_flows, &proto, &init, BPF_NOEXIST));
	}
	struct flow_stats other = {.packets = 7, .bytes = 7, .cpu = cpu};
	k = 1000;
	record(2, bpf_map_update_elem(&cpu_flows, &k, &other, BPF_ANY));
	k = 1001;
	record(3, bpf_map_update_elem(&cpu_flows, &k, &other, BPF_ANY)); /* -E2BIG */
	k = 1000;
	record(4, bpf_map_delete_elem(&cpu_flows, &k));
	record(5, bpf_map_delete_elem(&cpu_flows, &k)); /* -ENOENT */
	record(6, cpu);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
