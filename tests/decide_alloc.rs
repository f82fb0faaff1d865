//! `route::decide` makes no heap allocation: 10,000 decisions for each of the benchmarked cases
//! (sticky cookie, new user, pinned), counted by dhat's global allocator, against the fixture's
//! health view and against the production one (the registry's `Slots`).

use veer::health::registry::Registry;
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
        (Case::NewUser, Ok(d)) => d.set_cookie && !d.pinned(),
        (Case::Pinned, Ok(d)) => d.pool == canary && d.pinned(),
        (_, Err(_)) => false,
    }
}

/// Decisions as expected, and heap blocks and bytes allocated, over 10,000 requests per case.
fn one_round(table: &Table, health: &impl HealthView) -> (u32, u64, u64) {
    let (blue, canary) = (fixture::pool(table, "blue"), fixture::pool(table, "canary"));
    let requests: Vec<_> = CASES
        .iter()
        .map(|&case| (case, fixture::headers(table, case)))
        .collect();
    let before = dhat::HeapStats::get();
    let mut ok = 0u32;
    for (case, headers) in &requests {
        for i in 0..10_000u64 {
            let view = fixture::view(headers, i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let d = decide(table, &view, health);
            ok += u32::from(check(*case, d, blue, canary));
        }
    }
    let after = dhat::HeapStats::get();
    (
        ok,
        after.total_blocks - before.total_blocks,
        after.total_bytes - before.total_bytes,
    )
}

/// The fewest allocations over three rounds: dhat counts every thread's, and the test
/// harness's own threads may allocate while a round runs; an allocation in `decide` shows in
/// every round.
fn fewest(table: &Table, health: &impl HealthView) -> (u32, u64, u64) {
    (0..3)
        .map(|_| one_round(table, health))
        .min_by_key(|&(_, blocks, bytes)| (blocks, bytes))
        .unwrap()
}

#[test]
fn decide_does_not_allocate() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let table = fixture::table();

    let (ok, blocks, bytes) = fewest(&table, &fixture::AtomicHealth::new());
    dhat::assert_eq!(ok, 30_000);
    dhat::assert_eq!(blocks, 0);
    dhat::assert_eq!(bytes, 0);

    let registry = Registry::default();
    let slots = registry.reconcile(&table, None);
    let (ok, blocks, bytes) = fewest(&table, &slots);
    dhat::assert_eq!(ok, 30_000);
    dhat::assert_eq!(blocks, 0);
    dhat::assert_eq!(bytes, 0);
}
