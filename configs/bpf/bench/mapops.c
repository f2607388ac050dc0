// The seed's map-operation benchmark ("run the map op 1000 times in one function") as XDP
// programs, so that the kernel runs them through BPF_PROG_TEST_RUN and we run the same object
// through our JIT. One program per map type, so its update, lookup and delete runs share the
// map; the frame says what to do:
//   bytes 0..4  first key (u32, little-endian): keys are first .. first + 999
//   byte  4     0 = update (BPF_ANY, value = key), 1 = lookup, 2 = delete
// Each run does 1000 operations and returns XDP_PASS. The lookups sum the values they find into
// `looked_up`, so that no compiler (clang, the kernel's JIT or ours) may drop a lookup whose
// result is unused: each timed lookup really reads its value.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define OPS 1000
#define ENTRIES 4096

#define MAP(name, kind)                                                                            \
    struct {                                                                                       \
        __uint(type, kind);                                                                        \
        __uint(max_entries, ENTRIES);                                                              \
        __type(key, __u32);                                                                        \
        __type(value, __u64);                                                                      \
    } name SEC(".maps")

MAP(hash, BPF_MAP_TYPE_HASH);
MAP(array, BPF_MAP_TYPE_ARRAY);
MAP(percpu_hash, BPF_MAP_TYPE_PERCPU_HASH);
MAP(percpu_array, BPF_MAP_TYPE_PERCPU_ARRAY);

/* The sum of the values the last lookup run found (read by nobody; it keeps the loads live). */
volatile __u64 looked_up;

static __always_inline int mapops(struct xdp_md *ctx, void *map)
{
    unsigned char *data = (void *)(long)ctx->data;
    unsigned char *end = (void *)(long)ctx->data_end;
    if (data + 5 > end)
        return XDP_ABORTED;
    __u32 first = (data[0] | data[1] << 8 | data[2] << 16 | (__u32)data[3] << 24) % ENTRIES;
    __u32 op = data[4];
    if (op == 0) {
        for (__u32 i = 0; i < OPS; i++) {
            __u32 key = first + i;
            __u64 value = key;
            bpf_map_update_elem(map, &key, &value, BPF_ANY);
        }
    } else if (op == 1) {
        __u64 sum = 0;
        for (__u32 i = 0; i < OPS; i++) {
            __u32 key = first + i;
            __u64 *value = bpf_map_lookup_elem(map, &key);
            if (value)
                sum += *value;
        }
        looked_up = sum;
    } else {
        for (__u32 i = 0; i < OPS; i++) {
            __u32 key = first + i;
            bpf_map_delete_elem(map, &key);
        }
    }
    return XDP_PASS;
}

SEC("xdp") int mapops_hash(struct xdp_md *ctx) { return mapops(ctx, &hash); }
SEC("xdp") int mapops_array(struct xdp_md *ctx) { return mapops(ctx, &array); }
SEC("xdp") int mapops_percpu_hash(struct xdp_md *ctx) { return mapops(ctx, &percpu_hash); }
SEC("xdp") int mapops_percpu_array(struct xdp_md *ctx) { return mapops(ctx, &percpu_array); }

char LICENSE[] SEC("license") = "GPL";
