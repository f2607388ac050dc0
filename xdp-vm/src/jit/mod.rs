//! The Cranelift JIT. (Being written.)
