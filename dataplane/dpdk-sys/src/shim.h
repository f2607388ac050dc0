/* The part of DPDK's API the dataplane uses, for bindgen; and the shim's own functions, which
 * wrap what DPDK defines static inline in its headers (no symbol to link against). */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_dev.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

uint16_t dp_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t dp_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
int dp_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned int n);
void dp_pktmbuf_free(struct rte_mbuf *m);
int dp_errno(void);
/* sizeof(struct rte_mbuf) and RTE_PKTMBUF_HEADROOM as this DPDK was built. */
unsigned int dp_mbuf_size(void);
unsigned int dp_pktmbuf_headroom(void);
/* RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP (function-like macros bindgen cannot see). */
uint64_t dp_rss_ip_tcp_udp(void);
