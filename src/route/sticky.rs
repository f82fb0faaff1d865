//! The sticky-session cookie: its value format, encoding and decoding, and the `Set-Cookie`
//! header for a new value. Owns the bucket that follows a ramp: the cookie keeps a user's bucket,
//! so the split (not the cookie) still decides the pool as weights change. Never trusts a value:
//! anything malformed decodes to `None`, never an error or a panic.
//!
//! Value (opaque to users), 28 lower-case hex digits:
//! `BBBB` bucket (< 10000) · `SSSSSSSSSSSSSSSS` server `cookie_id` · `CCCCCCCC` checksum, the low
//! 32 bits of `xxh3_64_with_seed(first 20 bytes, route seed)`. The checksum catches corruption and
//! hand edits, and a cookie of another route; it is not a secret MAC, and needs none: a forged
//! cookie can only choose a bucket and a server that the proxy would also hand out.

use http::HeaderValue;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::table::{Sticky, BUCKETS};

/// Length of a cookie value.
pub const VALUE_LEN: usize = 28;
const BODY_LEN: usize = 20;

/// An encoded cookie value on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StickyValue {
    bytes: [u8; VALUE_LEN],
}

impl StickyValue {
    pub fn as_str(&self) -> &str {
        // Always ASCII hex digits, so this never fails.
        std::str::from_utf8(&self.bytes).unwrap_or_default()
    }
}

impl std::fmt::Debug for StickyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for StickyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], value: u64) {
    let n = out.len();
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = 4 * (n - 1 - i);
        *byte = HEX[((value >> shift) & 0xf) as usize];
    }
}

fn checksum(seed: u64, body: &[u8]) -> u64 {
    xxh3_64_with_seed(body, seed) & 0xffff_ffff
}

/// The value for a bucket and a server (its `cookie_id`) on the route with this seed.
pub fn encode(seed: u64, bucket: u16, server_id: u64) -> StickyValue {
    let mut bytes = [0u8; VALUE_LEN];
    put_hex(&mut bytes[0..4], u64::from(bucket));
    put_hex(&mut bytes[4..BODY_LEN], server_id);
    let sum = checksum(seed, &bytes[..BODY_LEN]);
    put_hex(&mut bytes[BODY_LEN..], sum);
    StickyValue { bytes }
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(v))
    })
}

/// `(bucket, server cookie_id)` of a valid value; `None` for a wrong length, a digit that is not
/// lower-case hex, a bucket out of range or a bad checksum.
pub fn decode(seed: u64, value: &str) -> Option<(u16, u64)> {
    let bytes = value.as_bytes();
    if bytes.len() != VALUE_LEN {
        return None;
    }
    let bucket = u16::try_from(parse_hex(&bytes[0..4])?).ok()?;
    let server = parse_hex(&bytes[4..BODY_LEN])?;
    let sum = parse_hex(&bytes[BODY_LEN..])?;
    if bucket >= BUCKETS || sum != checksum(seed, &bytes[..BODY_LEN]) {
        return None;
    }
    Some((bucket, server))
}

/// `Set-Cookie: <cookie>=<value><attributes>`. Allocates: it runs only when a cookie is issued.
pub fn set_cookie_header(sticky: &Sticky, value: &StickyValue) -> HeaderValue {
    let mut line =
        Vec::with_capacity(sticky.cookie.len() + 1 + VALUE_LEN + sticky.attributes.len());
    line.extend_from_slice(sticky.cookie.as_bytes());
    line.push(b'=');
    line.extend_from_slice(value.as_str().as_bytes());
    line.extend_from_slice(sticky.attributes.as_bytes());
    // Config validation keeps control characters out of names; drop any that slipped through
    // rather than fail a response over it.
    line.retain(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    match HeaderValue::from_bytes(&line) {
        Ok(v) => v,
        Err(_) => HeaderValue::from_static(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEED: u64 = 0x1234_5678_9abc_def0;

    #[test]
    fn round_trip() {
        for (bucket, server) in [(0, 0), (9999, u64::MAX), (4321, 0xdead_beef_0000_0001)] {
            let v = encode(SEED, bucket, server);
            assert_eq!(v.as_str().len(), VALUE_LEN);
            assert!(v.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(decode(SEED, v.as_str()), Some((bucket, server)));
        }
    }

    #[test]
    fn known_format() {
        let v = encode(SEED, 0x0102, 0x0a0b_0c0d_0e0f_1011);
        assert_eq!(&v.as_str()[..20], "01020a0b0c0d0e0f1011");
    }

    #[test]
    fn another_routes_seed_is_rejected() {
        let v = encode(SEED, 10, 20);
        assert_eq!(decode(SEED ^ 1, v.as_str()), None);
    }

    #[test]
    fn every_single_digit_edit_is_rejected() {
        let v = encode(SEED, 1234, 0x5555_6666_7777_8888);
        let original = v.as_str().as_bytes().to_vec();
        for i in 0..VALUE_LEN {
            for &d in HEX.iter().chain(b"AFgz-=; \x00") {
                if d == original[i] {
                    continue;
                }
                let mut edited = original.clone();
                edited[i] = d;
                let edited = String::from_utf8(edited).unwrap();
                assert_eq!(decode(SEED, &edited), None, "{edited}");
            }
        }
    }

    #[test]
    fn bucket_out_of_range_is_rejected_even_with_a_good_checksum() {
        let mut bytes = *b"ffff0000000000000001________";
        let sum = checksum(SEED, &bytes[..BODY_LEN]);
        put_hex(&mut bytes[BODY_LEN..], sum);
        let s = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(decode(SEED, s), None);
        let mut bytes = *b"27100000000000000001________"; // 0x2710 = 10000
        let sum = checksum(SEED, &bytes[..BODY_LEN]);
        put_hex(&mut bytes[BODY_LEN..], sum);
        assert_eq!(decode(SEED, std::str::from_utf8(&bytes).unwrap()), None);
    }

    #[test]
    fn garbage_never_decodes_or_panics() {
        let good = encode(SEED, 7, 9);
        let longer = format!("{good}0");
        let non_ascii = format!("{}é", &good.as_str()[..26]);
        let inputs = [
            "",
            "x",
            "0000",
            &good.as_str()[..27],
            &longer,
            &non_ascii,
            "éééééééééééééééééééééééééééé",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "                            ",
            "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        ];
        for input in inputs {
            assert_eq!(decode(SEED, input), None, "{input:?}");
        }
        let upper = good.as_str().to_ascii_uppercase();
        if upper != good.as_str() {
            assert_eq!(decode(SEED, &upper), None);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x = super::super::hash::mix(x);
            let mut buf = [0u8; VALUE_LEN];
            put_hex(&mut buf[..16], x);
            put_hex(&mut buf[16..], x.rotate_left(17));
            let s = std::str::from_utf8(&buf).unwrap();
            if let Some((bucket, _)) = decode(SEED, s) {
                assert!(bucket < BUCKETS);
            }
        }
    }

    #[test]
    fn set_cookie_line() {
        let sticky = Sticky {
            cookie: "veer_web".into(),
            max_age: Duration::from_secs(3600),
            attributes: "; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax".into(),
        };
        let v = encode(SEED, 42, 7);
        let header = set_cookie_header(&sticky, &v);
        assert_eq!(
            header.to_str().unwrap(),
            format!("veer_web={v}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax")
        );
    }

    #[test]
    fn set_cookie_drops_control_bytes() {
        let sticky = Sticky {
            cookie: "a\nb".into(),
            max_age: Duration::from_secs(1),
            attributes: "; Path=/".into(),
        };
        let v = encode(SEED, 1, 1);
        let header = set_cookie_header(&sticky, &v);
        assert_eq!(header.to_str().unwrap(), format!("ab={v}; Path=/"));
    }
}
