// An update whose 32-byte value starts 8 bytes below the frame top.
#include "common.h"
SEC("xdp") int map_value_too_small(struct xdp_md *ctx)
{
	__u32 key = 0;
	void *val;
	asm volatile("%0 = r10; %0 += -8" : "=r"(val));
	return bpf_map_update_elem(&amap, &key, val, BPF_ANY) ? XDP_DROP : XDP_PASS;
}
