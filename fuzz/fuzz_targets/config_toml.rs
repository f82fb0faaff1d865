//! Invariant: any text given as a config file yields a compiled config or a list of errors,
//! never a panic; every error has a message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = veer::config::from_toml(text, "fuzz.toml") {
            assert!(!errors.0.is_empty());
            assert!(errors.0.iter().all(|e| !e.message.is_empty()));
        }
    }
});
