//! The hot path's cost of reading the running table: `State::snapshot()` (an `ArcSwap` load
//! that takes an `Arc`, held for the whole request, and its drop), measured alone and while
//! another thread keeps swapping tables in, as the change path does.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use veer::state::State;

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

fn bench_snapshot(c: &mut Criterion) {
    let table = veer::config::from_toml(CONFIG, "bench.toml")
        .expect("bench config")
        .table;
    let state = Arc::new(State::new(table.clone()));
    let mut group = c.benchmark_group("snapshot");
    group.bench_function("load", |b| {
        b.iter(|| {
            let snap = state.snapshot();
            black_box(snap.table.version)
        })
    });
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                state.install(table.clone());
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    group.bench_function("load_while_swapping", |b| {
        b.iter(|| {
            let snap = state.snapshot();
            black_box(snap.table.version)
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = swapper.join();
    group.finish();
}

criterion_group!(benches, bench_snapshot);
criterion_main!(benches);
