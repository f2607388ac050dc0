//! Packet crafting and writing.

#![deny(unsafe_code)]
