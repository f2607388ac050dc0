/* bpf_redirect to the interface in `target_ifindex` (a const volatile the config sets): frames
 * arriving anywhere else are redirected there, frames arriving on it are dropped (no loops).
 * The dataplane's redirect test sends through one veth and expects the frames on another. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 target_ifindex = 0;

SEC("xdp")
int redirect_port(struct xdp_md *ctx)
{
	if (ctx->ingress_ifindex == target_ifindex)
		return XDP_DROP;
	return bpf_redirect(target_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
