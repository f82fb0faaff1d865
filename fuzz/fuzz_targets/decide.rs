//! Invariant: over any request (host, path, cookies, headers, client address) and any
//! server health, `decide` picks a route, pool and server inside the table, the pool one of the
//! route's (its split's, or a pin's when pinned), an available server, `set_cookie` only on
//! sticky routes with a cookie that decodes back to the decision, and refuses no request while
//! every server is available.
//! The check itself is `checks::decide_request`, which tests/fuzz_corpus.rs replays over the corpus.
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::decide_request(data));
