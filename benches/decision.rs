//! `route::decide` on the hot path: a returning user with a sticky cookie, a new user, and a
//! pinned request, over a route with three pools, three non-matching pins and sticky sessions.
//! Each case is measured twice: against a minimal atomic health view (`decide`), and against
//! the health registry's own view of an installed table (`decide_registry`), which is what the
//! proxy reads. `decide_registry/*_canary_down` has every canary server out, so the split is
//! laid over the remaining pools and the pin falls through.
//! Target: well under 250 ns per decision, no allocation (counted in `tests/decide_alloc.rs`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use veer::route::{decide, HealthView, Table};

#[path = "support/decision_fixture.rs"]
mod fixture;

use fixture::{Case, CASES};

fn name(case: Case) -> &'static str {
    match case {
        Case::Sticky => "sticky_cookie",
        Case::NewUser => "new_user",
        Case::Pinned => "pinned",
    }
}

fn measure(c: &mut Criterion, group: &str, table: &Table, health: &impl HealthView, suffix: &str) {
    let mut group = c.benchmark_group(group);
    for case in CASES {
        let headers = fixture::headers(table, case);
        let mut random = 0u64;
        group.bench_function(format!("{}{suffix}", name(case)), |b| {
            b.iter(|| {
                random = random.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let view = fixture::view(&headers, random);
                decide(black_box(table), black_box(&view), health)
            })
        });
    }
    group.finish();
}

fn bench_decide(c: &mut Criterion) {
    let table = fixture::table();
    measure(c, "decide", &table, &fixture::AtomicHealth::new(), "");
    let state = veer::state::State::new(table.clone());
    let snap = state.snapshot();
    measure(c, "decide_registry", &snap.table, &snap.slots, "");
    let canary = fixture::pool(&snap.table, "canary");
    for server in 0..3 {
        let _ = snap.slots.server(canary, server).set_unhealthy(true);
    }
    measure(
        c,
        "decide_registry",
        &snap.table,
        &snap.slots,
        "_canary_down",
    );
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
