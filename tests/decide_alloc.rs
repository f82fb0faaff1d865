//! `route::decide` makes no heap allocation: 10,000 decisions for each of the benchmarked cases
//! (sticky cookie, new user, pinned), with a minimal health view and with the health
//! registry's own, counted by dhat's global allocator.

use veer::route::{decide, Decision, HealthView, PoolId, Refusal, Table};

#[path = "../benches/support/decision_fixture.rs"]
mod fixture;

use fixture::{Case, CASES};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The decision is the one the case expects (so the loop measures the intended path).
fn check(case: Case, d: Result<Decision, Refusal>, blue: PoolId, canary: PoolId) -> bool {
    match (case, d) {
        (Case::Sticky, Ok(d)) => d.pool == blue && d.server == 1 && !d.set_cookie,
        (Case::NewUser, Ok(d)) => d.set_cookie && !d.pinned,
        (Case::Pinned, Ok(d)) => d.pool == canary && d.pinned,
        (_, Err(_)) => false,
    }
}

/// 10,000 decisions per case; how many the case expected.
fn decide_all(
    table: &Table,
    requests: &[(Case, http::HeaderMap)],
    health: &impl HealthView,
    blue: PoolId,
    canary: PoolId,
) -> u32 {
    let mut ok = 0u32;
    for (case, headers) in requests {
        for i in 0..10_000u64 {
            let view = fixture::view(headers, i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let d = decide(table, &view, health);
            ok += u32::from(check(*case, d, blue, canary));
        }
    }
    ok
}

#[test]
fn decide_does_not_allocate() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let table = fixture::table();
    let health = fixture::AtomicHealth::new();
    let state = veer::state::State::new(table.clone());
    let snap = state.snapshot();
    let (blue, canary) = (
        fixture::pool(&table, "blue"),
        fixture::pool(&table, "canary"),
    );
    let requests: Vec<_> = CASES
        .iter()
        .map(|&case| (case, fixture::headers(&table, case)))
        .collect();

    let before = dhat::HeapStats::get();
    let ok = decide_all(&table, &requests, &health, blue, canary)
        + decide_all(&snap.table, &requests, &snap.slots, blue, canary);
    let after = dhat::HeapStats::get();

    dhat::assert_eq!(ok, 60_000);
    dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
    dhat::assert_eq!(after.total_bytes - before.total_bytes, 0);
}
