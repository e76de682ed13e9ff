//! A small, fixed-key 64-bit hash, so every node computes the same tables and choices.
//!
//! FNV-1a over the bytes, finished with the splitmix64 mixer for good low bits. Not
//! DoS-resistant (nothing here is keyed by attacker-chosen table sizes) and not `RandomState`,
//! which would differ per process.

use std::net::IpAddr;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// splitmix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes `bytes` with a seed; different seeds give independent hashes.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ mix(seed);
    for byte in bytes {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix(h)
}

/// Hashes an IP address (v4 and v6 never collide by construction of the byte strings).
pub fn hash_ip(seed: u64, ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash_bytes(seed, &v4.octets()),
        IpAddr::V6(v6) => hash_bytes(seed, &v6.octets()),
    }
}

/// Hashes a client address and port (a flow from one client).
pub fn hash_flow(seed: u64, ip: IpAddr, port: u16) -> u64 {
    mix(hash_ip(seed, ip) ^ u64::from(port).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}
