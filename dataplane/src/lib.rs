//! The dataplane: runs XDP programs on packets in userspace.

#![deny(unsafe_code)]

pub mod kernel;
