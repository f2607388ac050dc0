// Calls helper id 9999, which no kernel has: both loaders must refuse it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static long (*bpf_no_such_helper)(void) = (void *)9999;

SEC("xdp")
int unknown_helper(struct xdp_md *ctx)
{
	return bpf_no_such_helper() ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
