//! Invariant: any cookie value decodes to a bucket below 10000 or to nothing, never a panic;
//! a decoded value encodes back to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veer::route::sticky;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let seed = veer::route::hash::route_seed("web");
    if let Some((bucket, server)) = sticky::decode(seed, value) {
        assert!(bucket < veer::route::BUCKETS);
        assert_eq!(sticky::encode(seed, bucket, server).as_str(), value);
    }
});
