//! Invariant: admin path segments percent-decode without a panic, never longer than
//! their input, text without `%` unchanged; what `veer ctl` encodes decodes back to itself.
//! The check itself is `checks::percent_decode`, which tests/fuzz_corpus.rs replays over the corpus.
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::percent_decode(data));
