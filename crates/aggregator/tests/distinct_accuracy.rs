//! Accuracy of `DistinctCount` against spec §2: exact up to at least 1,000
//! distinct ids, within 1 % relative error beyond, for hashes of realistic
//! ids (xxh3-64 of `"<prefix>-<i>"`, as the aggregator hashes them).
//!
//! The fast test runs by default; the full one (20 id prefixes, up to 10
//! million ids) takes 10–20 s in release:
//! `cargo test --release -p livetally-aggregator --test distinct_accuracy -- --ignored --nocapture`
//! prints the worst error measured at each cardinality.

use std::fmt::Write;

use livetally_aggregator::distinct::{DistinctCount, EXACT_LIMIT};

/// The cardinalities the spec's promise is checked at.
const CARDINALITIES: [u64; 11] = [
    1, 10, 100, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000, 1_000_000, 10_000_000,
];

/// Spec §2: distinct counts are exact up to at least this many ids.
const SPEC_EXACT: u64 = 1_000;

/// Spec §2: the largest relative error allowed beyond [`SPEC_EXACT`].
const SPEC_ERROR: f64 = 0.01;

/// Inserts the ids `"<prefix>-0"`, `"<prefix>-1"`, … (each new id followed
/// by a repeat of an earlier one, as viewers come back) and returns the count
/// at each of `cardinalities`, which must be increasing.
fn counts_at(prefix: &str, cardinalities: &[u64]) -> Vec<(u64, u64, bool)> {
    let mut counter = DistinctCount::new();
    let mut id = String::new();
    let mut hash_of = |i: u64| {
        id.clear();
        write!(id, "{prefix}-{i}").expect("writing to a String cannot fail");
        xxhash_rust::xxh3::xxh3_64(id.as_bytes())
    };
    let mut inserted = 0;
    cardinalities
        .iter()
        .map(|&n| {
            while inserted < n {
                counter.insert(hash_of(inserted));
                counter.insert(hash_of(inserted / 2));
                inserted += 1;
            }
            (n, counter.count(), counter.is_exact())
        })
        .collect()
}

/// Checks the spec's promise for every prefix and returns the worst relative
/// error at each cardinality.
fn check(prefixes: &[String], cardinalities: &[u64]) -> Vec<(u64, f64)> {
    let mut worst: Vec<(u64, f64)> = cardinalities.iter().map(|&n| (n, 0.0)).collect();
    for prefix in prefixes {
        for (slot, (n, count, exact)) in counts_at(prefix, cardinalities).into_iter().enumerate() {
            if n <= EXACT_LIMIT as u64 {
                assert!(exact, "{prefix}: {n} ids left the exact phase");
                assert_eq!(count, n, "{prefix}: not exact at {n} ids");
            }
            let error = (count as f64 - n as f64).abs() / n as f64;
            assert!(n > SPEC_EXACT || error == 0.0, "{prefix}: {count} for {n}");
            assert!(
                error <= SPEC_ERROR,
                "{prefix}: {count} for {n} ids, error {:.3} %",
                error * 100.0
            );
            worst[slot].1 = worst[slot].1.max(error);
        }
    }
    worst
}

/// `count` id prefixes: `u`, as the spec's example ids, then others.
fn prefixes(count: usize) -> Vec<String> {
    std::iter::once("u".to_owned())
        .chain((1..count).map(|seed| format!("s{seed}/u")))
        .collect()
}

#[test]
fn exact_at_the_spec_limit() {
    assert!(EXACT_LIMIT as u64 >= SPEC_EXACT);
}

#[test]
fn within_one_percent_fast() {
    // Small enough for a debug build (well under a second): 3 prefixes, up
    // to a million ids.
    let cardinalities: Vec<u64> = CARDINALITIES
        .iter()
        .copied()
        .filter(|&n| n <= 1_000_000)
        .collect();
    check(&prefixes(3), &cardinalities);
}

#[test]
fn within_one_percent_at_ten_million() {
    // The whole range of the issue, 1 … 10 million, for one prefix: a few
    // seconds in the dev profile; the ignored test below tries 20 prefixes.
    check(&prefixes(1), &CARDINALITIES);
}

#[test]
#[ignore = "slow in debug builds: run with --release -- --ignored"]
fn within_one_percent_up_to_ten_million() {
    let prefixes = prefixes(20);
    let worst = check(&prefixes, &CARDINALITIES);
    println!("worst relative error over {} id prefixes:", prefixes.len());
    for (n, error) in worst {
        println!("{n:>12} ids: {:.3} %", error * 100.0);
    }
}
