// bpf_redirect_map on a hash map: only DEVMAP, DEVMAP_HASH, CPUMAP and XSKMAP redirect.
#include "common.h"
SEC("xdp") int redirect_map_wrong_type(struct xdp_md *ctx)
{
	return bpf_redirect_map(&hmap, ctx->rx_queue_index, XDP_PASS);
}
