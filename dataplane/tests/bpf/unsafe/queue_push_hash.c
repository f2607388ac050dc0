// bpf_map_push_elem on a hash map: only queues, stacks (and bloom filters) take pushes.
#include "common.h"
SEC("xdp") int queue_push_hash(struct xdp_md *ctx)
{
	__u64 v = ctx->rx_queue_index;
	return bpf_map_push_elem(&hmap, &v, 0) ? XDP_DROP : XDP_PASS;
}
