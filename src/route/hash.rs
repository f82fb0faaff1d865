//! Fixed-seed stable hashing: the same answer on every instance, every restart and every
//! version of veer. Owns the normative bucket formula, the seeds derived from config names and
//! the cheap mixer that splits one random word into independent draws. Never uses a per-process
//! random state.

use std::net::IpAddr;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::table::BUCKETS;

/// The bucket of a `hash_key` value. **Normative**: `xxh3_64_with_seed(key, seed) % 10000`,
/// where `seed` is the route's seed (`route_seed(route name)`), i.e. SPEC's
/// `xxh3_64(route name, key) % 10000`. Changing this moves users between pools on upgrade.
pub fn bucket(seed: u64, key: &[u8]) -> u16 {
    // The remainder is below BUCKETS, so it always fits.
    (xxh3_64_with_seed(key, seed) % u64::from(BUCKETS)) as u16
}

/// A route's seed: `xxh3_64(route name)`. Feeds `bucket` and the sticky-cookie checksum.
pub fn route_seed(route_name: &str) -> u64 {
    xxh3_64(route_name.as_bytes())
}

/// A server's stable sticky-cookie id: `xxh3_64("pool/addr")`.
pub fn server_cookie_id(pool: &str, addr: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(pool.as_bytes());
    hasher.update(b"/");
    hasher.update(addr.as_bytes());
    hasher.digest()
}

/// A client address as hash-key bytes: IPv4 (and IPv4-mapped IPv6) as 4 octets, else 16.
#[derive(Debug, Clone, Copy)]
pub struct IpKey {
    octets: [u8; 16],
    len: u8,
}

impl IpKey {
    pub fn new(ip: IpAddr) -> Self {
        let mut octets = [0u8; 16];
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                octets[..4].copy_from_slice(&v4.octets());
                Self { octets, len: 4 }
            }
            IpAddr::V6(v6) => Self {
                octets: v6.octets(),
                len: 16,
            },
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.octets[..usize::from(self.len)]
    }
}

/// One splitmix64 output: a bijective, well-mixed function of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which independent draw of a request's randomness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Bucket = 1,
    Mirror = 2,
    FirstChoice = 3,
    SecondChoice = 4,
}

/// The `lane`-th element of the splitmix64 stream seeded with `random`: the draws of different
/// lanes are independent of one another even though they come from one word.
pub fn draw(random: u64, lane: Lane) -> u64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    mix(random.wrapping_add(GAMMA.wrapping_mul(lane as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn bucket_is_the_normative_formula() {
        let seed = route_seed("web");
        assert_eq!(seed, xxh3_64(b"web"));
        let expected = (xxh3_64_with_seed(b"user-42", seed) % 10_000) as u16;
        assert_eq!(bucket(seed, b"user-42"), expected);
    }

    #[test]
    fn bucket_has_known_values() {
        // Pinned values: if these change, every deployed user moves. Don't update them lightly.
        assert_eq!(bucket(route_seed("web"), b"user-42"), KNOWN_WEB_USER_42);
        // XXH3_64bits("") is 0x2D06800538D394C2 in the reference implementation.
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(bucket(0, b""), 3138);
    }

    const KNOWN_WEB_USER_42: u16 = 9737;

    #[test]
    fn bucket_is_deterministic_and_in_range() {
        for i in 0u32..2000 {
            let key = i.to_le_bytes();
            let b = bucket(7, &key);
            assert!(b < BUCKETS);
            assert_eq!(b, bucket(7, &key));
        }
    }

    #[test]
    fn cookie_id_is_pool_slash_addr() {
        assert_eq!(
            server_cookie_id("blue", "10.0.0.1:80"),
            xxh3_64(b"blue/10.0.0.1:80")
        );
    }

    #[test]
    fn ip_keys() {
        let v4 = IpKey::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(v4.as_bytes(), &[10, 1, 2, 3]);
        let mapped = IpKey::new(IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()));
        assert_eq!(mapped.as_bytes(), &[10, 1, 2, 3]);
        let v6 = IpKey::new(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(v6.as_bytes().len(), 16);
        assert_eq!(v6.as_bytes()[15], 1);
    }

    #[test]
    fn lanes_differ() {
        let r = 12345;
        let lanes = [
            Lane::Bucket,
            Lane::Mirror,
            Lane::FirstChoice,
            Lane::SecondChoice,
        ];
        for (i, a) in lanes.iter().enumerate() {
            for b in &lanes[i + 1..] {
                assert_ne!(draw(r, *a), draw(r, *b));
            }
        }
    }
}
