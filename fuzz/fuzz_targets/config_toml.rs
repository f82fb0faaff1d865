//! Invariant: any text as a config file compiles or comes back as a list of errors,
//! each with a message; never a panic.
//! The check itself is `checks::config_toml`, which tests/fuzz_corpus.rs replays over the corpus.
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config_toml(data));
