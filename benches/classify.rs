//! ns per classification for ~20 typical OLTP statements, cached and uncached.
//! Per-statement time = reported time / 20 (or 1e9 / the elements-per-second throughput).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgrelay::router::{Classifier, RuleSet, SessionContext};

const STATEMENTS: [&str; 20] = [
    // point selects by primary key
    "SELECT * FROM users WHERE id = $1",
    "SELECT id, email, name FROM users WHERE id = 42",
    "SELECT count(*) FROM orders WHERE user_id = $1",
    // joins
    "SELECT u.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1",
    "SELECT o.id, li.sku, li.qty FROM orders o JOIN line_items li ON li.order_id = o.id WHERE o.id = $1 ORDER BY li.id",
    // writes
    "INSERT INTO orders (user_id, total, created_at) VALUES ($1, $2, now()) RETURNING id",
    "INSERT INTO events (kind, payload) VALUES ('login', '{\"ip\": \"127.0.0.1\"}')",
    "UPDATE users SET last_seen = now() WHERE id = $1",
    "UPDATE orders SET status = 'paid' WHERE id = $1 AND status = 'pending'",
    "DELETE FROM sessions WHERE expires_at < now()",
    // transaction control and session
    "BEGIN",
    "COMMIT",
    "BEGIN READ ONLY",
    "SET statement_timeout = 5000",
    // locking / queue
    "SELECT id FROM jobs WHERE state = 'ready' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
    "SELECT nextval('orders_id_seq')",
    // ORM-style long selects
    "SELECT \"users\".\"id\" AS \"users_id\", \"users\".\"name\" AS \"users_name\", \"users\".\"email\" AS \"users_email\", \"users\".\"created_at\" AS \"users_created_at\", \"users\".\"updated_at\" AS \"users_updated_at\" FROM \"users\" WHERE \"users\".\"id\" = $1 AND \"users\".\"deleted_at\" IS NULL ORDER BY \"users\".\"id\" LIMIT $2",
    "SELECT t0.id, t0.name, t0.sku, t0.price, t1.id, t1.name FROM products AS t0 LEFT OUTER JOIN categories AS t1 ON t1.id = t0.category_id WHERE (t0.active AND t0.price BETWEEN $1 AND $2) ORDER BY t0.price DESC, t0.id LIMIT 50 OFFSET $3",
    "WITH recent AS (SELECT user_id, sum(total) AS spent FROM orders WHERE created_at > now() - interval '30 days' GROUP BY user_id) SELECT u.id, u.name, r.spent FROM users u JOIN recent r ON r.user_id = u.id WHERE r.spent > $1 ORDER BY r.spent DESC LIMIT 10",
    "SELECT EXISTS(SELECT 1 FROM users WHERE email = $1)",
];

fn classify_all(classifier: &Classifier, ctx: &SessionContext<'_>) {
    for sql in STATEMENTS {
        black_box(classifier.classify(black_box(sql), ctx));
    }
}

fn bench(c: &mut Criterion) {
    let ctx = SessionContext::new("app", "alice");
    let mut group = c.benchmark_group("classify_20_oltp_statements");
    group.throughput(Throughput::Elements(STATEMENTS.len() as u64));
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));

    let cached = Classifier::new(RuleSet::builtin(), 10_000);
    classify_all(&cached, &ctx);
    group.bench_function("cached", |b| b.iter(|| classify_all(&cached, &ctx)));

    // Capacity 0 disables the cache: every call tokenises, parses and analyses.
    let uncached = Classifier::new(RuleSet::builtin(), 0);
    group.bench_function("uncached", |b| b.iter(|| classify_all(&uncached, &ctx)));
    group.finish();

    // Simple-protocol clients inline values: each text is new, the shape is not.
    let mut group = c.benchmark_group("classify_inlined_literals");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    let texts: Vec<String> = (0..4096)
        .map(|i| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                10_000 + i
            )
        })
        .collect();
    let mut next = texts.iter().cycle();
    group.bench_function("cached_by_shape", |b| {
        b.iter(|| black_box(cached.classify(next.next().expect("cycle"), &ctx)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
