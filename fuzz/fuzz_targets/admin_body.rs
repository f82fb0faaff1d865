//! Invariant: any admin API body (split, promote, config as JSON or TOML) is parsed or
//! refused with a 400/422, never a panic or a 5xx; an accepted split or promote survives a
//! round trip through JSON; an accepted config validates without a panic.
//! The check itself is `checks::admin_body`, which tests/fuzz_corpus.rs replays over the corpus.
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::admin_body(data));
