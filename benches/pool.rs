//! Pool checkout + checkin cost with a stand-in connector (no I/O), alone
//! and with 8 concurrent tasks (with enough connections for all of them,
//! and with half as many so tasks queue as waiters).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pgrelay::pool::{Connector, Pool, PoolSettings};

#[derive(Debug, thiserror::Error)]
#[error("stand-in connector never fails")]
struct Never;

/// Hands out numbered connections and counts how many it opened.
#[derive(Default, Clone)]
struct StandIn {
    opened: Arc<AtomicUsize>,
}

impl Connector for StandIn {
    type Conn = usize;
    type Error = Never;
    async fn connect(&self) -> Result<usize, Never> {
        Ok(self.opened.fetch_add(1, Ordering::Relaxed))
    }
}

fn settings(size: usize) -> PoolSettings {
    PoolSettings::with_size(size)
}

async fn checkout_checkin(pool: &Pool<StandIn>, iters: u64) {
    for _ in 0..iters {
        let conn = pool.get().await.expect("stand-in checkout");
        std::hint::black_box(*conn);
        conn.release();
    }
}

/// Total wall time for `iters` checkouts spread over `tasks` tasks.
fn run_concurrent(
    rt: &tokio::runtime::Runtime,
    pool_size: usize,
    tasks: u64,
    iters: u64,
) -> Duration {
    let connector = StandIn::default();
    let pool = Pool::new(connector.clone(), settings(pool_size), vec![]);
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        let mut handles = Vec::new();
        for task in 0..tasks {
            let pool = pool.clone();
            // Spread the remainder so exactly `iters` checkouts happen.
            let share = iters / tasks + u64::from(task < iters % tasks);
            handles.push(tokio::spawn(
                async move { checkout_checkin(&pool, share).await },
            ));
        }
        for h in handles {
            h.await.expect("bench task");
        }
        start.elapsed()
    });
    let opened = connector.opened.load(Ordering::Relaxed);
    assert!(
        opened <= pool_size,
        "pool opened {opened} > size {pool_size}"
    );
    elapsed
}

fn pool_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("pool/checkout_checkin");
    group.bench_function("uncontended", |b| {
        let pool = Pool::new(StandIn::default(), settings(4), vec![]);
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                checkout_checkin(&pool, iters).await;
                start.elapsed()
            })
        })
    });
    group.bench_function("8_tasks_pool_8", |b| {
        b.iter_custom(|iters| run_concurrent(&rt, 8, 8, iters))
    });
    group.bench_function("8_tasks_pool_4_waiters", |b| {
        b.iter_custom(|iters| run_concurrent(&rt, 4, 8, iters))
    });
    group.finish();
}

criterion_group!(benches, pool_benches);
criterion_main!(benches);
