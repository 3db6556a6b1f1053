//! The send planner's decisions: the adaptive path choice per message, and coalescing a
//! payload of many segments down to the iovec limit.
//!
//! `cargo bench -p rpc-bench --bench planner`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rpc_core::TransportStats;
use transport_uring::plan::{coalesce, Adaptive, Path};
use transport_uring::ZcMode;

fn choose(c: &mut Criterion) {
    let stats = TransportStats::new("bench");
    let mut g = c.benchmark_group("planner/choose");
    let zc = Adaptive::new(ZcMode::Adaptive, 256);
    g.bench_function("adaptive_on_zero_copy", |b| {
        b.iter(|| black_box(zc.choose()))
    });
    let copy = Adaptive::new(ZcMode::Adaptive, 256);
    copy.notified(true, &stats);
    assert_eq!(copy.choose(), Path::Copy);
    g.bench_function("adaptive_on_copy_with_reprobes", |b| {
        b.iter(|| black_box(copy.choose()))
    });
    g.bench_function("notification_copied", |b| {
        b.iter(|| copy.notified(black_box(true), &stats))
    });
    g.finish();
}

fn coalescing(c: &mut Criterion) {
    let mut g = c.benchmark_group("planner/coalesce");
    let even = vec![256usize; 4096];
    g.bench_function("4096x256_to_17", |b| {
        b.iter(|| black_box(coalesce(black_box(&even), 17)))
    });
    g.bench_function("4096x256_to_1024", |b| {
        b.iter(|| black_box(coalesce(black_box(&even), 1024)))
    });
    // Large pieces with small ones between them: only the small runs merge.
    let mixed: Vec<usize> = (0..2048)
        .map(|i| if i % 64 == 0 { 1 << 20 } else { 100 + i % 7 })
        .collect();
    g.bench_function("mixed_2048_to_64", |b| {
        b.iter(|| black_box(coalesce(black_box(&mixed), 64)))
    });
    let few = vec![1usize << 20; 8];
    g.bench_function("8_under_the_limit", |b| {
        b.iter(|| black_box(coalesce(black_box(&few), 1024)))
    });
    g.finish();
}

criterion_group!(benches, choose, coalescing);
criterion_main!(benches);
