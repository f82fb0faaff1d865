//! The cost of recording one attempt's outcome: `Stats::record` alone (three relaxed atomic
//! adds and a bucket search), the same while another thread records into the same lane (the
//! counters' cache line shared between cores, as under load), and the whole `outcome::report`
//! that the proxy calls once per attempt (lane lookup, stats, upstream-error metrics, passive
//! ejection).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use veer::outcome::{Ended, Outcome};
use veer::state::State;
use veer::stats::Stats;

const CONFIG: &str = r#"
[listen]
http = "127.0.0.1:0"
[pools.blue]
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
[pools.green]
servers = ["127.0.0.1:9011"]
[[routes]]
name = "web"
split = { blue = 95, green = 5 }
"#;

fn outcome(ms: u64) -> Outcome {
    Outcome {
        route: 0,
        pool: 1,
        server: 0,
        ended: Ended::Answered(200),
        latency: Duration::from_millis(ms),
        reused: true,
    }
}

fn bench_stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats");
    let stats = Arc::new(Stats::default());
    let attempt = outcome(12);
    group.bench_function("record", |b| b.iter(|| stats.record(black_box(&attempt))));
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
        std::thread::spawn(move || {
            let attempt = outcome(30);
            while !stop.load(Ordering::Relaxed) {
                stats.record(&attempt);
            }
        })
    };
    group.bench_function("record_contended", |b| {
        b.iter(|| stats.record(black_box(&attempt)))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    let table = veer::config::from_toml(CONFIG, "bench.toml")
        .expect("bench config")
        .table;
    let state = State::new(table);
    let snap = state.snapshot();
    group.bench_function("outcome_report", |b| {
        b.iter(|| veer::outcome::report(&snap, black_box(&attempt)))
    });
    group.finish();
}

criterion_group!(benches, bench_stats);
criterion_main!(benches);
