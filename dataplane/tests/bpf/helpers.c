// bpf-cflags: -mcpu=v3
/* The non-map helpers, reduced to deterministic observations: bpf_ktime_get_ns (monotonic:
 * t2 >= t1, non-zero), bpf_get_smp_processor_id (the tests pin to CPU 0), bpf_get_prandom_u32
 * (that both calls ran; the value itself is masked away), bpf_trace_printk through bpf_printk
 * (its return value, the formatted length, for %d %i %u %x %lld %llu %llx %s %c %p-free formats;
 * four or more arguments go through bpf_trace_vprintk), and the xdp_md fields a plain XDP program
 * may read (ingress_ifindex, rx_queue_index, data_meta; egress_ifindex is only readable by
 * devmap programs and the verifier refuses it here). Results in `helper_results`.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct helper_out {
	__u64 ktime_monotonic;
	__u64 ktime_nonzero;
	__u64 cpu;
	__u64 prandom_calls;
	__u64 prandom_masked;
	__u64 ingress_ifindex;
	__u64 rx_queue_index;
	__u64 meta_len;
	__s64 printk[12];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct helper_out);
} helper_results SEC(".maps");

SEC("xdp")
int helpers(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct helper_out *o;

	if (data + 50 > end)
		return XDP_ABORTED;
	o = bpf_map_lookup_elem(&helper_results, &key);
	if (!o)
		return XDP_ABORTED;

	__u64 t1 = bpf_ktime_get_ns();
	__u64 t2 = bpf_ktime_get_ns();
	o->ktime_monotonic = t2 >= t1;
	o->ktime_nonzero = t1 != 0;
	o->cpu = bpf_get_smp_processor_id();

	__u32 r1 = bpf_get_prandom_u32();
	__u32 r2 = bpf_get_prandom_u32();
	o->prandom_calls = 2;
	o->prandom_masked = (r1 & 0) | (r2 & 0);

	o->ingress_ifindex = ctx->ingress_ifindex;
	o->rx_queue_index = ctx->rx_queue_index;
	o->meta_len = (__u64)(data - (void *)(long)ctx->data_meta);

	__s32 neg = -(__s32)*(__u8 *)(data + 23) - 1000;      /* -1001 for ICMP */
	__u32 u = *(__u32 *)(data + 26);                       /* 10.0.0.1 as a LE u32 */
	__u64 big = *(__u64 *)(data + 42) | 0x8000000000000000ULL;
	char name[8] = "xdp";

	o->printk[0] = bpf_printk("plain text");
	o->printk[1] = bpf_printk("d=%d", neg);
	o->printk[2] = bpf_printk("i=%i u=%u", neg, u);
	o->printk[3] = bpf_printk("x=%x", u);
	o->printk[4] = bpf_printk("lld=%lld llu=%llu", (__s64)big, big);
	o->printk[5] = bpf_printk("llx=%llx", big);
	o->printk[6] = bpf_printk("s=%s", name);
	o->printk[7] = bpf_printk("c=%c%c", 'o', 'k');
	o->printk[8] = bpf_printk("%d %u %x %s", neg, u, u, name);   /* 4 args: vprintk */
	o->printk[9] = bpf_printk("pct=%% %d", 5);
	o->printk[10] = bpf_printk("");
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
