/* Out-of-line copies of DPDK's static-inline fast path, so Rust can call them. */
#include "shim.h"

uint16_t dp_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t dp_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

int dp_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned int n)
{
	return rte_pktmbuf_alloc_bulk(pool, mbufs, n);
}

void dp_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

int dp_errno(void)
{
	return rte_errno;
}

unsigned int dp_mbuf_size(void)
{
	return sizeof(struct rte_mbuf);
}

unsigned int dp_pktmbuf_headroom(void)
{
	return RTE_PKTMBUF_HEADROOM;
}

uint64_t dp_rss_ip_tcp_udp(void)
{
	return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP;
}
