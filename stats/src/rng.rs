//! SplitMix64, a tiny seeded deterministic stream, and FNV-1a, for
//! turning names into seeds and cache keys. Written out rather than taken
//! from a crate so that a seed gives the same numbers (the same bootstrap
//! intervals, the same synthetic weights and prompts in the host, the same
//! plugin cache keys) whatever a dependency update does.

/// Advances a SplitMix64 state and returns the next value.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a hash: stable across builds and platforms, for seeds and
/// cache keys (written out so it can never change with a dependency).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
