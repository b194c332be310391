//! Cost of one sink call as an engine sees it: through the abi_stable
//! vtable into the host's collector (clock read, lock, append).
//! `cargo bench -p engine-matrix --bench sink`
use criterion::{criterion_group, criterion_main, Criterion};
use engine_api::TokenEvent;
use engine_matrix::measure::Collector;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    for batch in [1usize, 8] {
        c.bench_function(&format!("sink.tokens batch={batch}"), |b| {
            b.iter_custom(|iters| {
                // Fresh records every 4096 steps, as a real cell would have.
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(4096);
                    let col = Arc::new(Collector::new());
                    let ids = col.register(batch, 0, false, 16, n as u32);
                    let sink = col.sink();
                    let events: Vec<TokenEvent> = ids
                        .iter()
                        .map(|&id| TokenEvent {
                            request_id: id,
                            token: 7,
                        })
                        .collect();
                    let t = Instant::now();
                    for _ in 0..n {
                        sink.tokens(std::hint::black_box(events.as_slice()).into());
                    }
                    total += t.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
