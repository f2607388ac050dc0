// A bpf_for_each_map_elem callback writes through its key pointer: keys are read only.
#include "common.h"
static long rekey(void *map, __u32 *key, __u64 *value, void *ctx)
{
	*key = 0;
	return 0;
}
SEC("xdp") int callback_key_write(struct xdp_md *ctx)
{
	bpf_for_each_map_elem(&hmap, rekey, NULL, 0);
	return XDP_PASS;
}
