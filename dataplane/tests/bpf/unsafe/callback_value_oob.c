// A bpf_for_each_map_elem callback writes one element past its 32-byte map value.
#include "common.h"
static long poke(void *map, __u32 *key, struct big_value *v, void *ctx)
{
	v->a[4] = 1;
	return 0;
}
SEC("xdp") int callback_value_oob(struct xdp_md *ctx)
{
	bpf_for_each_map_elem(&amap, poke, NULL, 0);
	return XDP_PASS;
}
