// bpf_redirect_map with a number where the map is expected.
#include "common.h"
SEC("xdp") int redirect_map_scalar(struct xdp_md *ctx)
{
	long m = 4096;
	BARRIER(m);
	return bpf_redirect_map((void *)m, 0, XDP_PASS);
}
