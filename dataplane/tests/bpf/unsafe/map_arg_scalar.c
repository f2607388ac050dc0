// A number where a map is expected.
#include "common.h"
SEC("xdp") int map_arg_scalar(struct xdp_md *ctx)
{
	__u32 key = 0;
	long m = 4096;
	BARRIER(m);
	return bpf_map_lookup_elem((void *)m, &key) ? XDP_PASS : XDP_DROP;
}
