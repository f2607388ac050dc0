// An 8-byte key read from the last 4 bytes of the stack: past the frame.
#include "common.h"
SEC("xdp") int map_key_too_small(struct xdp_md *ctx)
{
	void *key;
	asm volatile("%0 = r10; %0 += -4" : "=r"(key));
	__u64 *v = bpf_map_lookup_elem(&kmap8, key);
	return v ? XDP_PASS : XDP_DROP;
}
