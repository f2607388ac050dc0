// Reads 8 bytes at offset 32 of a 32-byte value.
#include "common.h"
SEC("xdp") int map_value_past_end(struct xdp_md *ctx)
{
	__u32 key = ctx->rx_queue_index;
	struct big_value *v = bpf_map_lookup_elem(&amap, &key);
	if (!v)
		return XDP_DROP;
	long i = 4;
	BARRIER(i);
	return v->a[i] ? XDP_PASS : XDP_DROP;
}
