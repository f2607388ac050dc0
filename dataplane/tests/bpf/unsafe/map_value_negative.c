// A signed index into a map value, checked only from above.
#include "common.h"
SEC("xdp") int map_value_negative(struct xdp_md *ctx)
{
	__u8 *data = DATA(ctx);
	if ((void *)(data + 14) > END(ctx))
		return XDP_DROP;
	__u32 key = 0;
	struct big_value *v = bpf_map_lookup_elem(&amap, &key);
	if (!v)
		return XDP_DROP;
	long i = (__s8)data[0];
	BARRIER(i);
	if (i > 3)
		return XDP_DROP;
	return v->a[i] ? XDP_PASS : XDP_DROP;
}
