//! The kernel as oracle and rival: loading objects through the bpf syscall and running them with
//! `BPF_PROG_TEST_RUN`. (Being written.)
