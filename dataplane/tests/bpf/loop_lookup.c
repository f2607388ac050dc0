/* A 1000-iteration loop whose counter advances by a map lookup's result (by 1 or by 2): its
 * range widens every iteration, so no two iterations are the same state. The kernel prunes
 * such loops with range containment and precision tracking; so must ours, within the
 * 1,000,000-instruction limit. Results in `ll_out`.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} ll_steps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} ll_out SEC(".maps");

SEC("xdp")
int loop_lookup(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 acc = 0, rounds = 0;
	__u32 i = 0;

	/* Seed the step table from the frame, so the walk differs per frame. */
	if (data + 16 <= end) {
		__u32 k = ((__u8 *)data)[15] & 15;
		__u64 s = ((__u8 *)data)[14];
		bpf_map_update_elem(&ll_steps, &k, &s, BPF_ANY);
	}
#pragma clang loop unroll(disable)
	while (i < 1000) {
		__u32 key = i & 15;
		__u64 *step = bpf_map_lookup_elem(&ll_steps, &key);
		if (step) {
			acc += *step;
			i += (*step & 1) + 1;
		} else {
			i += 1;
		}
		rounds++;
	}
	__u32 k0 = 0, k1 = 1, k2 = 2;
	__u64 last = i;
	bpf_map_update_elem(&ll_out, &k0, &acc, BPF_ANY);
	bpf_map_update_elem(&ll_out, &k1, &rounds, BPF_ANY);
	bpf_map_update_elem(&ll_out, &k2, &last, BPF_ANY);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
