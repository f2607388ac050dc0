/* Shared by the unsafe corpus: each program here is one fault the kernel's verifier refuses,
 * and ours must refuse too (tests/verifier.rs). `BARRIER(x)` hides a value from clang so the
 * fault survives optimisation. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define DATA(ctx) ((void *)(long)(ctx)->data)
#define END(ctx) ((void *)(long)(ctx)->data_end)
#define BARRIER(x) asm volatile("" : "+r"(x))

struct big_value {
	__u64 a[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} hmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct big_value);
} amap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u64);
	__type(value, __u64);
} kmap8 SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
