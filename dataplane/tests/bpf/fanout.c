/* XSKMAP and DEVMAP broadcast redirects for the dataplane's AF_XDP tests. Frames arriving on
 * `ingress` (a const volatile the config sets; 0: any) are handled by `mode`:
 *   0: bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)  -- the classic AF_XDP program
 *   1: bpf_redirect_map(&xsks, 1, XDP_DROP)  -- slot 1 (the socket of queue 1, if filled)
 *   2: bpf_redirect_map(&ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS)
 *   3: bpf_redirect_map(&ports, 0, BPF_F_BROADCAST)
 *   4: XDP_PASS
 *   5: bpf_redirect_map(&ports_hash, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS)
 * Frames arriving anywhere else are dropped (no loops). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 ingress = 0;
const volatile __u32 mode = 0;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} ports_hash SEC(".maps");

SEC("xdp")
int fanout(struct xdp_md *ctx)
{
	if (ingress && ctx->ingress_ifindex != ingress)
		return XDP_DROP;
	switch (mode) {
	case 0:
		return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	case 1:
		return bpf_redirect_map(&xsks, 1, XDP_DROP);
	case 2:
		return bpf_redirect_map(&ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
	case 3:
		return bpf_redirect_map(&ports, 0, BPF_F_BROADCAST);
	case 5:
		return bpf_redirect_map(&ports_hash, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
	default:
		return XDP_PASS;
	}
}

char LICENSE[] SEC("license") = "GPL";
