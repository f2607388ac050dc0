// A stateless firewall: drop IPv4 (optionally VLAN-tagged) frames whose source address falls in a
// blocked prefix (longest-prefix match in an LPM trie), count verdicts per CPU, pass the rest.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct lpm_v4_key {
	__u32 prefixlen;
	__u32 addr; /* network byte order */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, __u32); /* the rule id, counted in rule_hits */
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} blocked_v4 SEC(".maps");

enum { STAT_PASS, STAT_DROP, STAT_NOT_IPV4, STAT_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1024);
} rule_hits SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline int count(__u32 stat, int action)
{
	__u64 *n = bpf_map_lookup_elem(&verdicts, &stat);

	if (n)
		*n += 1;
	return action;
}

SEC("xdp")
int xdp_firewall(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3 = eth + 1;

	if (l3 > data_end)
		return XDP_DROP;
	__be16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_hdr *vlan = l3;

		if ((void *)(vlan + 1) > data_end)
			return XDP_DROP;
		proto = vlan->proto;
		l3 = vlan + 1;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return count(STAT_NOT_IPV4, XDP_PASS);
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;

	struct lpm_v4_key key = { .prefixlen = 32, .addr = ip->saddr };
	__u32 *rule = bpf_map_lookup_elem(&blocked_v4, &key);
	if (!rule)
		return count(STAT_PASS, XDP_PASS);

	__u32 id = *rule;
	__u64 one = 1;
	__u64 *hits = bpf_map_lookup_elem(&rule_hits, &id);
	if (hits)
		*hits += 1;
	else
		bpf_map_update_elem(&rule_hits, &id, &one, BPF_NOEXIST);
	return count(STAT_DROP, XDP_DROP);
}

char LICENSE[] SEC("license") = "GPL";
