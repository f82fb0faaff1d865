//! Invariant: any `If-Match` value is a version, `*` or a 400, never a panic; a version
//! is the digits sent, and the ETag the API sends for it parses back to it.
//! The check itself is `checks::if_match`, which tests/fuzz_corpus.rs replays over the corpus.
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::if_match(data));
