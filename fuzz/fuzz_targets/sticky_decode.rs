//! Invariant: any cookie value decodes to a bucket below 10000 or to nothing, never a
//! panic; a decoded value encodes back to the same text.
//! The check itself is `checks::sticky_decode`, which tests/fuzz_corpus.rs replays over the corpus.
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::sticky_decode(data));
