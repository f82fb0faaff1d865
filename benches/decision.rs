//! `route::decide` on the hot path: a returning user with a sticky cookie, a new user, and a
//! pinned request, over a route with three pools, three non-matching pins and sticky sessions.
//! Target: well under 250 ns per decision, no allocation (counted in `tests/decide_alloc.rs`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use veer::route::decide;

#[path = "support/decision_fixture.rs"]
mod fixture;

use fixture::{Case, CASES};

fn bench_decide(c: &mut Criterion) {
    let table = fixture::table();
    let health = fixture::AtomicHealth::new();
    let mut group = c.benchmark_group("decide");
    for case in CASES {
        let headers = fixture::headers(&table, case);
        let name = match case {
            Case::Sticky => "sticky_cookie",
            Case::NewUser => "new_user",
            Case::Pinned => "pinned",
        };
        let mut random = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                random = random.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let view = fixture::view(&headers, random);
                decide(black_box(&table), black_box(&view), &health)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
