//! `bpf_redirect` and `bpf_redirect_map` for XDP, after `net/core/filter.c`
//! (`bpf_xdp_redirect`, `__bpf_xdp_redirect_map`): the return value the program sees, and the
//! target recorded in the run state (the kernel's per-CPU `bpf_redirect_info`), which the
//! dataplane reads after an `XDP_REDIRECT` verdict to send the frame on.
//!
//! Return values, as the kernel's:
//! - `bpf_redirect(ifindex, flags)`: `XDP_REDIRECT`, or `XDP_ABORTED` for any non-zero flags
//!   (the target is then left as it was);
//! - `bpf_redirect_map(map, key, flags)`: `XDP_REDIRECT` when slot `key` (truncated to 32 bits,
//!   as the kernel's lookup takes a `u32`) is filled, or with `BPF_F_BROADCAST` (devmaps only);
//!   otherwise the low two bits of `flags` (the action to take on a miss) and the target is
//!   cleared; `XDP_ABORTED` for flags outside the action bits and, for devmaps,
//!   `BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS`.

use maps::{Map, map_type};

use crate::context::action;

/// `BPF_F_BROADCAST`: `bpf_redirect_map` on a devmap sends a copy to every interface in it.
pub const BPF_F_BROADCAST: u64 = 1 << 3;
/// `BPF_F_EXCLUDE_INGRESS`: with `BPF_F_BROADCAST`, not to the interface the frame came from.
pub const BPF_F_EXCLUDE_INGRESS: u64 = 1 << 4;
/// The flag bits `bpf_redirect_map` returns as the action when the key is missing.
const ACTION_MASK: u64 = (action::ABORTED | action::DROP | action::PASS | action::TX) as u64;

/// Where a program redirected its frame: what the kernel keeps in `bpf_redirect_info` between
/// the helper call and `xdp_do_redirect`. Map entries are resolved when the helper runs, as in
/// the kernel, so a later map update does not change a recorded target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Redirect {
    /// `bpf_redirect(ifindex, 0)`: out of interface `ifindex`.
    Ifindex(u32),
    /// `bpf_redirect_map` on a `DEVMAP` / `DEVMAP_HASH`: out of interface `ifindex`, the value
    /// found at `key` in the program's map number `map` (its index in [`crate::Program::maps`]).
    Dev { map: u32, key: u32, ifindex: u32 },
    /// `bpf_redirect_map` on an `XSKMAP`: to the AF_XDP socket with id `socket` (the value the
    /// control plane stored at `key`) in the program's map number `map`.
    Xsk { map: u32, key: u32, socket: u32 },
    /// `bpf_redirect_map` with `BPF_F_BROADCAST` on a devmap: a copy to every interface in map
    /// number `map`, except the ingress interface when `exclude_ingress`.
    Broadcast { map: u32, exclude_ingress: bool },
}

/// `bpf_redirect` for XDP: records `ifindex` in `target` and returns `XDP_REDIRECT`; non-zero
/// `flags` abort without touching `target`.
pub fn redirect(target: &mut Option<Redirect>, ifindex: u64, flags: u64) -> u64 {
    if flags != 0 {
        return u64::from(action::ABORTED);
    }
    *target = Some(Redirect::Ifindex(ifindex as u32));
    u64::from(action::REDIRECT)
}

/// `bpf_redirect_map` on `map` (the program's map number `map_index`); `None` when `map` is not
/// a `DEVMAP`, `DEVMAP_HASH` or `XSKMAP` (the verifier refuses such a call).
pub fn redirect_map(
    target: &mut Option<Redirect>,
    map: &Map,
    map_index: u32,
    key: u64,
    flags: u64,
) -> Option<u64> {
    let t = map.def().map_type;
    let devmap = matches!(t, map_type::DEVMAP | map_type::DEVMAP_HASH);
    if !devmap && t != map_type::XSKMAP {
        return None;
    }
    let allowed = ACTION_MASK | if devmap { BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS } else { 0 };
    if flags & !allowed != 0 {
        return Some(u64::from(action::ABORTED));
    }
    // The kernel's lookup functions take a `u32` key: the upper half of the argument is dropped.
    let key = key as u32;
    if flags & BPF_F_BROADCAST != 0 {
        *target =
            Some(Redirect::Broadcast { map: map_index, exclude_ingress: flags & BPF_F_EXCLUDE_INGRESS != 0 });
        return Some(u64::from(action::REDIRECT));
    }
    let Some(value) = map.redirect_target(key) else {
        // "the last one always takes precedence": a miss clears an earlier target.
        *target = None;
        return Some(flags & ACTION_MASK);
    };
    *target = Some(if devmap {
        Redirect::Dev { map: map_index, key, ifindex: value }
    } else {
        Redirect::Xsk { map: map_index, key, socket: value }
    });
    Some(u64::from(action::REDIRECT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use maps::{BPF_ANY, MapDef};

    fn map(map_type: u32, value_size: u32) -> Map {
        Map::new("m", MapDef { map_type, key_size: 4, value_size, max_entries: 4, map_flags: 0 }, 1).unwrap()
    }

    #[test]
    fn redirect_aborts_on_flags_and_keeps_the_old_target() {
        let mut t = None;
        assert_eq!(redirect(&mut t, 7, 0), 4);
        assert_eq!(t, Some(Redirect::Ifindex(7)));
        assert_eq!(redirect(&mut t, 9, 1), 0);
        assert_eq!(t, Some(Redirect::Ifindex(7)));
        assert_eq!(redirect(&mut t, 0x1_0000_0009, 0), 4, "the ifindex is a u32");
        assert_eq!(t, Some(Redirect::Ifindex(9)));
    }

    #[test]
    fn redirect_map_hits_misses_and_flags() {
        let dev = map(map_type::DEVMAP, 4);
        dev.update_user(&1u32.to_ne_bytes(), &5u32.to_ne_bytes(), BPF_ANY).unwrap();
        let mut t = None;
        assert_eq!(redirect_map(&mut t, &dev, 2, 1, 0), Some(4));
        assert_eq!(t, Some(Redirect::Dev { map: 2, key: 1, ifindex: 5 }));
        assert_eq!(redirect_map(&mut t, &dev, 2, 0x7_0000_0001, 0), Some(4), "key truncated to u32");
        assert_eq!(redirect_map(&mut t, &dev, 2, 0, 2), Some(2), "miss: the action in the flags");
        assert_eq!(t, None, "a miss clears the target");
        assert_eq!(redirect_map(&mut t, &dev, 2, 9, 3 | BPF_F_EXCLUDE_INGRESS), Some(3));
        assert_eq!(redirect_map(&mut t, &dev, 2, 1, 4), Some(0), "unknown flag bit");
        assert_eq!(redirect_map(&mut t, &dev, 2, 3, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS), Some(4));
        assert_eq!(t, Some(Redirect::Broadcast { map: 2, exclude_ingress: true }));

        let xsk = map(map_type::XSKMAP, 4);
        xsk.update_user(&3u32.to_ne_bytes(), &11u32.to_ne_bytes(), BPF_ANY).unwrap();
        assert_eq!(redirect_map(&mut t, &xsk, 0, 3, 0), Some(4));
        assert_eq!(t, Some(Redirect::Xsk { map: 0, key: 3, socket: 11 }));
        assert_eq!(redirect_map(&mut t, &xsk, 0, 3, BPF_F_BROADCAST), Some(0), "no broadcast on xskmaps");
        assert_eq!(redirect_map(&mut t, &xsk, 0, 4, 1), Some(1));

        let arr = map(map_type::ARRAY, 4);
        assert_eq!(redirect_map(&mut t, &arr, 0, 0, 0), None);
    }
}
