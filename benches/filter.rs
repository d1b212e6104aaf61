//! The expression language's costs, and the subscription index against a linear scan.
//!
//! `cargo bench --bench filter` prints criterion's figures for each case, then a summary that
//! compares figures measured in this same run (medians of criterion's own samples):
//!
//! * parse + compile of a typical filter;
//! * one evaluation of a simple equality and of a complex filter (goal: simple under 1 µs);
//! * one record matched against 100,000 subscriptions — 99% owner filters over 10,000 users
//!   (half with an extra `AND status = 'active'`), 1% filters the index cannot use — through the
//!   index and by evaluating every subscription (goal: the index at least 50x faster);
//! * the same match with 1k, 10k, 100k and 1M subscriptions, each record reaching 10 of them
//!   (goal: flat).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion};
use serde_json::json;
use velo_realtime::filter::{
    Auth, CompiledFilter, Filter, FilterEngine, Record, SubscriptionIndex,
};

const SIMPLE: &str = "status = 'active'";
const COMPLEX: &str = "(status = 'active' OR status = 'pending') AND views >= 100 \
    AND title LIKE '%world%' AND author.name != 'bot' AND tag IN ('news', 'tech', 'sport')";

const SUBSCRIPTIONS: usize = 100_000;
const USERS: usize = 10_000;
/// One in this many subscriptions has a filter the index cannot use.
const UNINDEXABLE_EVERY: usize = 100;

thread_local! {
    /// Nanoseconds per iteration of every sample criterion took, by case.
    static SAMPLES: RefCell<BTreeMap<&'static str, Vec<f64>>> = RefCell::default();
}

/// Times `routine` with criterion, keeping each sample's per-iteration time for the summary.
fn timed(b: &mut Bencher<'_>, case: &'static str, mut routine: impl FnMut()) {
    b.iter_custom(|iterations| {
        let start = Instant::now();
        for _ in 0..iterations {
            routine();
        }
        let elapsed = start.elapsed();
        let per_iteration = elapsed.as_nanos() as f64 / iterations as f64;
        SAMPLES.with(|samples| {
            samples
                .borrow_mut()
                .entry(case)
                .or_default()
                .push(per_iteration)
        });
        elapsed
    });
}

fn median(case: &str) -> f64 {
    SAMPLES.with(|samples| {
        let mut values = samples.borrow().get(case).cloned().unwrap_or_default();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    })
}

fn compile(engine: &FilterEngine, text: &str) -> Arc<CompiledFilter> {
    let filter = Filter::parse(text).expect("benchmark filters parse");
    Arc::new(
        engine
            .compile(filter.expr().cloned())
            .expect("benchmark filters compile"),
    )
}

fn user(n: usize) -> Auth {
    let claims = json!({ "id": format!("user{n}"), "role": "member" });
    Auth::from_claims(claims.as_object().expect("an object"))
}

fn record() -> Record {
    record_by("user4242")
}

fn record_by(author: &str) -> Record {
    let record = json!({
        "id": "r1c2d3e4f5g6h7i",
        "collection_id": "posts",
        "author": author,
        "status": "active",
        "title": "Hello world, again",
        "views": 250,
        "tag": "tech",
        "created": "2026-11-29T20:15:03.123Z",
        "updated": "2026-11-29T20:15:03.123Z",
    });
    Record::from_json(&record).expect("an object")
}

fn language(c: &mut Criterion) {
    let engine = FilterEngine::new();
    let mut group = c.benchmark_group("language");
    group.bench_function("parse+compile complex", |b| {
        timed(b, "parse+compile", || {
            black_box(compile(&engine, black_box(COMPLEX)));
        })
    });

    let auth = user(1);
    let mut eval = engine.evaluation(record());
    for (case, text) in [("eval simple", SIMPLE), ("eval complex", COMPLEX)] {
        let filter = compile(&engine, text);
        assert!(
            eval.matches(&filter, &auth),
            "{text} matches the benchmark record"
        );
        group.bench_function(case, |b| {
            timed(b, case, || {
                black_box(eval.matches(black_box(&filter), &auth));
            })
        });
    }
    group.finish();
}

fn index(c: &mut Criterion) {
    let engine = FilterEngine::new();
    let owner = compile(&engine, "author = @request.auth.id");
    let owner_active = compile(&engine, "author = @request.auth.id AND status = 'active'");
    let mut index = SubscriptionIndex::new();
    for n in 0..SUBSCRIPTIONS {
        let filter = if n % UNINDEXABLE_EVERY == 0 {
            // Each its own text, as distinct users write them.
            match n % 3 {
                0 => compile(&engine, &format!("views > {}", n % 1000)),
                1 => compile(&engine, &format!("title LIKE '%{}%'", n % 97)),
                _ => compile(
                    &engine,
                    &format!("status != 'draft' AND views < {}", n % 500),
                ),
            }
        } else if n % 2 == 0 {
            owner.clone()
        } else {
            owner_active.clone()
        };
        index.insert(filter, user(n % USERS), n);
    }

    let mut eval = engine.evaluation(record());
    let (mut by_index, mut by_scan) = (0, 0);
    index.for_each_match(&mut eval, |_| by_index += 1);
    index.for_each_match_by_scan(&mut eval, |_| by_scan += 1);
    assert_eq!(by_index, by_scan, "the index and the scan agree");
    println!(
        "{SUBSCRIPTIONS} subscriptions, {} in the scan set; the record matches {by_index}",
        index.scan_len()
    );

    let mut group = c.benchmark_group("match 1 record, 100k subscriptions");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("index", |b| {
        timed(b, "index", || {
            let mut matched = 0;
            index.for_each_match(&mut eval, |_| matched += 1);
            black_box(matched);
        })
    });
    group.bench_function("linear scan", |b| {
        timed(b, "scan", || {
            let mut matched = 0;
            index.for_each_match_by_scan(&mut eval, |_| matched += 1);
            black_box(matched);
        })
    });
    group.finish();
}

/// Subscription counts for the growth curve, with their sample labels.
const GROWTH: [(usize, &str); 4] = [
    (1_000, "growth 1k"),
    (10_000, "growth 10k"),
    (100_000, "growth 100k"),
    (1_000_000, "growth 1M"),
];

/// Matching cost as subscriptions grow: N owner subscriptions over N/10 users (half with a
/// residual `status` condition), so a record always reaches 10 of them. Indexed matching should
/// stay flat from 1k to 1M.
fn growth(c: &mut Criterion) {
    let engine = FilterEngine::new();
    let owner = compile(&engine, "author = @request.auth.id");
    let owner_active = compile(&engine, "author = @request.auth.id AND status = 'active'");
    let mut group = c.benchmark_group("match 1 record, growing subscriptions");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    for (count, label) in GROWTH {
        let mut index = SubscriptionIndex::new();
        for n in 0..count {
            let filter = if n % 2 == 0 {
                owner.clone()
            } else {
                owner_active.clone()
            };
            index.insert(filter, user(n % (count / 10)), n);
        }
        let mut eval = engine.evaluation(record_by("user42"));
        let mut matched = 0;
        index.for_each_match(&mut eval, |_| matched += 1);
        assert_eq!(matched, 10, "user42 owns 10 subscriptions at every size");
        group.bench_function(label, |b| {
            timed(b, label, || {
                let mut matched = 0;
                index.for_each_match(&mut eval, |_| matched += 1);
                black_box(matched);
            })
        });
    }
    group.finish();
}

fn summary() {
    let (index, scan) = (median("index"), median("scan"));
    let simple = median("eval simple");
    println!("\n== summary (medians of this run's samples) ==");
    println!(
        "parse+compile complex filter: {:>10.2} µs",
        median("parse+compile") / 1e3
    );
    println!(
        "eval simple equality:         {:>10.0} ns   goal < 1000 ns: {}",
        simple,
        if simple < 1000.0 { "met" } else { "NOT met" }
    );
    println!(
        "eval complex filter:          {:>10.0} ns",
        median("eval complex")
    );
    println!("match via index:              {:>10.2} µs", index / 1e3);
    println!("match via linear scan:        {:>10.2} µs", scan / 1e3);
    let ratio = scan / index;
    println!(
        "index speed-up over scan:     {:>10.1}x   goal >= 50x: {}",
        ratio,
        if ratio >= 50.0 { "met" } else { "NOT met" }
    );
    let base = median(GROWTH[0].1);
    for (count, label) in GROWTH {
        println!(
            "match, {count:>9} subscriptions: {:>8.2} µs  ({:.2}x the 1k figure)",
            median(label) / 1e3,
            median(label) / base
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    language(&mut criterion);
    index(&mut criterion);
    growth(&mut criterion);
    criterion.final_summary();
    // Only `cargo bench` passes `--bench`; under `cargo test` criterion runs each case once,
    // in debug, and there are no figures worth printing.
    if std::env::args().any(|arg| arg == "--bench") {
        summary();
    }
}
