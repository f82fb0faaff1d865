//! Invariant: any text given to the duration and size parsers is a value or a message
//! naming it, never a panic; a duration is at most a year and reads back the same in
//! nanoseconds; a size reads back the same in bytes.
//! The check itself is `checks::duration_size`, which tests/fuzz_corpus.rs replays over the corpus.
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::duration_size(data));
