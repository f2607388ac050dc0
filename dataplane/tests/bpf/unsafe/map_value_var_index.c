// Indexes a 4-element array in a map value with an unchecked packet byte.
#include "common.h"
SEC("xdp") int map_value_var_index(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 14) > END(ctx))
		return XDP_DROP;
	__u32 key = 0;
	struct big_value *v = bpf_map_lookup_elem(&amap, &key);
	if (!v)
		return XDP_DROP;
	return v->a[data[0]] ? XDP_PASS : XDP_DROP;
}
