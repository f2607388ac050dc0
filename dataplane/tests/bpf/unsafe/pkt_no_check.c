// Reads the Ethernet type without any bounds check.
#include "common.h"
SEC("xdp") int pkt_no_check(struct xdp_md *ctx)
{
	__u8 *p = DATA(ctx);
	return p[12] == 8 ? XDP_PASS : XDP_DROP;
}
