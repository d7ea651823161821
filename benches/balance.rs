//! `pick()` cost of every balancer at 10, 100 and 1000 endpoints, and the ring / Maglev table
//! builds at 1000. Run: `cargo bench --bench balance -- --warm-up-time 1 --measurement-time 2`.
//!
//! A pick here is `candidates(ctx).next()`: what the request path pays for the first choice.
//! Keys and random numbers cycle through a precomputed array so the measurement is the
//! balancer, not the RNG; hashing keys are spread over the whole table so lookups miss cache as
//! they would in production.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard::balance::{self, PickContext};
use switchyard::config::{self, BalanceAlgorithm};
use switchyard::endpoint::EndpointState;

const SIZES: [usize; 3] = [10, 100, 1000];

fn address(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 8080))
}

/// The cluster config the snapshot would see, parsed from TOML like any config.
fn cluster(balance: &str, n: usize, extra: &str) -> config::ClusterConfig {
    let endpoints: Vec<String> = (0..n).map(|i| format!("\"{}\"", address(i))).collect();
    let hash = if balance == "ring_hash" || balance == "maglev" {
        "hash_on = \"header:x-user\"\n"
    } else {
        ""
    };
    let text = format!(
        "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"l\"\ncluster = \"c\"\n\n\
         [clusters.c]\nbalance = \"{balance}\"\n{hash}{extra}endpoints = [{}]\n",
        endpoints.join(", ")
    );
    let config = config::parse(&text, Path::new("bench.toml")).expect("bench config is valid");
    config.clusters.get("c").expect("cluster c").clone()
}

fn endpoints(n: usize) -> Vec<Arc<EndpointState>> {
    let mut list: Vec<Arc<EndpointState>> = (0..n)
        .map(|i| Arc::new(EndpointState::new("c", address(i), 1)))
        .collect();
    list.sort_by_key(|e| e.address());
    // Some load and latency so the P2C comparisons do real work.
    for (i, e) in list.iter().enumerate() {
        for _ in 0..i % 4 {
            std::mem::forget(e.start_request());
        }
        let latency = Duration::from_micros(500 + (i as u64 % 7) * 100);
        balance::peak_ewma::observe(e, latency, Instant::now());
    }
    list
}

fn picks(c: &mut Criterion) {
    let randoms: Vec<u64> = (0..4096).map(|_| fastrand::u64(..)).collect();
    let algorithms = [
        "round_robin",
        "random",
        "least_request",
        "least_connections",
        "peak_ewma",
        "ring_hash",
        "maglev",
    ];
    let mut group = c.benchmark_group("pick");
    for name in algorithms {
        for n in SIZES {
            let eps = endpoints(n);
            let balancer = balance::build(&cluster(name, n, ""), &eps);
            let hashing = name == "ring_hash" || name == "maglev";
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & 4095;
                    let r = randoms[i];
                    let ctx = PickContext {
                        endpoints: &eps,
                        client: None,
                        random: r,
                        hash: hashing.then_some(r),
                    };
                    black_box(balancer.candidates(&ctx).next())
                });
            });
        }
    }
    // Bounded loads: the whole admission (candidate walk + total in flight + CAS + release).
    for algorithm in ["ring_hash", "maglev"] {
        for n in SIZES {
            let eps = endpoints(n);
            let balancer = balance::build(&cluster(algorithm, n, "balance_factor = 1.25\n"), &eps);
            group.bench_with_input(
                BenchmarkId::new(format!("{algorithm}+bounded_choose"), n),
                &n,
                |b, _| {
                    let mut i = 0usize;
                    b.iter(|| {
                        i = (i + 1) & 4095;
                        let ctx = PickContext {
                            endpoints: &eps,
                            client: None,
                            random: randoms[i],
                            hash: Some(randoms[i]),
                        };
                        black_box(balance::choose(balancer.as_ref(), &ctx, |_| true).map(|p| p.0))
                    });
                },
            );
        }
    }
    group.finish();
}

fn builds(c: &mut Criterion) {
    let listed: Vec<(String, u32)> = (0..1000).map(|i| (address(i).to_string(), 1)).collect();
    let mut group = c.benchmark_group("build");
    group.sample_size(20);
    for (name, algorithm) in [
        ("ring_hash", BalanceAlgorithm::RingHash),
        ("maglev", BalanceAlgorithm::Maglev),
    ] {
        group.bench_function(BenchmarkId::new(name, 1000), |b| {
            b.iter(|| black_box(balance::hashing(algorithm, &listed, None, Duration::ZERO)));
        });
    }
    group.finish();
}

criterion_group!(benches, picks, builds);
criterion_main!(benches);
