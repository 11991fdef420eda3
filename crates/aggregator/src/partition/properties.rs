//! The aggregator's algebra, as properties: arrival order, duplicates and a
//! restart in the middle do not change the figures.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::event::{Action, Event, OrderLine};
use crate::testkit::{applied, event, Changelog, EUR, USD};

/// An event drawn from small domains, so that viewers, products, orders and
/// timestamps collide often.
#[derive(Clone, Debug)]
struct Spec {
    stream: u8,
    viewer: u8,
    ts: i64,
    with_seller: bool,
    /// `Some` reuses an event id across the sequence (a producer retry).
    reused_id: Option<u8>,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    View,
    Leave,
    Impression(u8),
    Click(u8),
    AddToCart(u8),
    Purchase {
        product: u8,
        order: u8,
        quantity: u32,
        unit_price: i64,
    },
    Refund {
        product: u8,
        order: u8,
        quantity: u32,
        unit_price: i64,
    },
    Like,
    Comment,
    Share,
    Follow,
}

fn kind() -> impl Strategy<Value = Kind> {
    let money = (0u8..4, 0u8..6, 1u32..4, 0i64..2000);
    prop_oneof![
        4 => Just(Kind::View),
        3 => Just(Kind::Leave),
        2 => (0u8..4).prop_map(Kind::Impression),
        2 => (0u8..4).prop_map(Kind::Click),
        1 => (0u8..4).prop_map(Kind::AddToCart),
        2 => money.clone().prop_map(|(product, order, quantity, unit_price)| Kind::Purchase { product, order, quantity, unit_price }),
        1 => money.prop_map(|(product, order, quantity, unit_price)| Kind::Refund { product, order, quantity, unit_price }),
        1 => prop_oneof![Just(Kind::Like), Just(Kind::Comment), Just(Kind::Share), Just(Kind::Follow)],
    ]
}

/// `ts` is 0 to 11 times `ts_step` ms: 1 keeps every event within the
/// allowed lateness of the others; 30,000 spreads them over six one-minute
/// windows, so windows close, are sealed and reopen.
fn spec(reuse_ids: bool, ts_step: i64) -> impl Strategy<Value = Spec> {
    let reused = if reuse_ids {
        prop::option::weighted(0.2, 0u8..8).boxed()
    } else {
        Just(None).boxed()
    };
    (0u8..3, 0u8..6, 0i64..12, any::<bool>(), reused, kind()).prop_map(
        move |(stream, viewer, ts, with_seller, reused_id, kind)| Spec {
            stream,
            viewer,
            ts: ts * ts_step,
            with_seller,
            reused_id,
            kind,
        },
    )
}

/// The `index`-th event of a sequence. Each stream sells in one currency and
/// has one seller, since "first seen" of those is order-dependent by contract.
fn build(index: usize, s: &Spec) -> Event<'static> {
    let stream = format!("live-{}", s.stream);
    let currency = if s.stream == 2 { EUR } else { USD };
    let line = |product: u8, order: u8, quantity: u32, unit_price: i64| OrderLine {
        product_id: format!("p{product}").into(),
        order_id: format!("o{order}").into(),
        quantity,
        unit_price,
        currency,
    };
    let action = match s.kind {
        Kind::View => Action::View,
        Kind::Leave => Action::Leave,
        Kind::Impression(p) => Action::Impression {
            product_id: format!("p{p}").into(),
        },
        Kind::Click(p) => Action::Click {
            product_id: format!("p{p}").into(),
        },
        Kind::AddToCart(p) => Action::AddToCart {
            product_id: format!("p{p}").into(),
        },
        Kind::Purchase {
            product,
            order,
            quantity,
            unit_price,
        } => Action::Purchase(line(product, order, quantity, unit_price)),
        Kind::Refund {
            product,
            order,
            quantity,
            unit_price,
        } => Action::Refund(line(product, order, quantity, unit_price)),
        Kind::Like => Action::Like,
        Kind::Comment => Action::Comment,
        Kind::Share => Action::Share,
        Kind::Follow => Action::Follow,
    };
    let event_id = match s.reused_id {
        Some(id) => format!("r{id}"),
        None => format!("e{index}"),
    };
    let mut e = event(&event_id, &stream, &format!("u{}", s.viewer), s.ts, action);
    e.seller_id = s.with_seller.then(|| format!("shop-{}", s.stream).into());
    e
}

fn events(reuse_ids: bool) -> impl Strategy<Value = Vec<Event<'static>>> {
    events_every(reuse_ids, 1)
}

fn events_every(reuse_ids: bool, ts_step: i64) -> impl Strategy<Value = Vec<Event<'static>>> {
    prop::collection::vec(spec(reuse_ids, ts_step), 0..60)
        .prop_map(|specs| specs.iter().enumerate().map(|(i, s)| build(i, s)).collect())
}

/// Every stream's rollup and products, for comparing two runs.
fn figures(agg: &PartitionAggregator) -> Vec<(StreamRollup, Vec<ProductRollup>)> {
    agg.rollups()
        .into_iter()
        .map(|r| {
            let products = agg.products(&r.stream_id).unwrap_or_default();
            (r, products)
        })
        .collect()
}

/// [`figures`] and every stream's retained windows.
fn figures_and_windows(
    agg: &PartitionAggregator,
) -> Vec<(StreamRollup, Vec<ProductRollup>, Vec<StreamRollup>)> {
    figures(agg)
        .into_iter()
        .map(|(r, products)| {
            let windows = agg.windows(&r.stream_id).unwrap_or_default();
            (r, products, windows)
        })
        .collect()
}

/// One run never stopping and one stopped after `split` events.
struct Restart {
    /// Every event applied, with a publication after `split` of them.
    straight: PartitionAggregator,
    /// The first `split` events applied, then published.
    before: PartitionAggregator,
    /// A new aggregator restored from `before`'s checkpoints.
    after: PartitionAggregator,
}

fn restart(all: &[Event<'_>], split: usize) -> Restart {
    let mut straight = applied(&all[..split]);
    let _ = straight.publish();
    for (position, e) in all.iter().enumerate().skip(split) {
        let _ = straight.apply(e, position as u64);
    }
    let mut before = applied(&all[..split]);
    let _ = before.publish();
    let mut changelog = Changelog::default();
    changelog.write(before.checkpoints());
    let after = changelog.restore(AggregatorConfig::default());
    Restart {
        straight,
        before,
        after,
    }
}

proptest! {
    #[test]
    fn any_arrival_order_gives_the_same_figures_peak_included(
        (original, shuffled) in events(false).prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        // Every event is within the allowed lateness of the others here, so
        // even the peak, a maximum over event time, cannot depend on order.
        let a = applied(&original);
        let b = applied(&shuffled);
        prop_assert_eq!(figures(&a), figures(&b));
        for (r, _) in figures(&b) {
            prop_assert!(r.peak_concurrent_viewers >= r.concurrent_viewers);
        }
    }

    #[test]
    fn every_event_twice_gives_the_same_figures_as_once(
        (original, delays) in events(true).prop_flat_map(|v| {
            let n = v.len();
            (Just(v), prop::collection::vec(any::<Index>(), n))
        })
    ) {
        // Each copy goes somewhere after its original.
        let n = original.len();
        let mut sequence: Vec<((usize, u8), &Event<'_>)> = Vec::with_capacity(2 * n);
        for (i, (e, delay)) in original.iter().zip(&delays).enumerate() {
            sequence.push(((i, 0), e));
            sequence.push(((i + delay.index(n - i + 1), 1), e));
        }
        sequence.sort_by_key(|(key, _)| *key);
        let doubled: Vec<Event<'_>> = sequence.into_iter().map(|(_, e)| e.clone()).collect();

        let once = applied(&original);
        let mut twice = PartitionAggregator::new(AggregatorConfig::default());
        let mut duplicates = 0;
        for (position, e) in doubled.iter().enumerate() {
            if twice.apply(e, position as u64) == Outcome::Duplicate {
                duplicates += 1;
            }
        }
        prop_assert_eq!(figures(&once), figures(&twice));
        prop_assert!(duplicates >= n, "every copy is a duplicate");
    }

    #[test]
    fn a_restart_anywhere_gives_the_same_figures(
        (all, split, resume) in events(true).prop_flat_map(|v| (Just(v), any::<Index>(), any::<Index>()))
    ) {
        let n = all.len();
        let split = split.index(n + 1);
        let resume = resume.index(split + 1);
        let Restart { straight, before, mut after } = restart(&all, split);
        prop_assert_eq!(figures(&after), figures(&before));
        let mut already_applied = 0;
        for (position, e) in all.iter().enumerate().skip(resume) {
            if after.apply(e, position as u64) == Outcome::AlreadyApplied {
                already_applied += 1;
            }
        }
        prop_assert_eq!(already_applied, split - resume);
        prop_assert_eq!(figures(&after), figures(&straight));
    }

    #[test]
    fn a_restart_across_closed_windows_gives_the_same_figures_and_windows(
        (all, split, resume) in events_every(true, 30_000)
            .prop_flat_map(|v| (Just(v), any::<Index>(), any::<Index>()))
    ) {
        // Events over six minutes, arriving in any order: publishing seals
        // the windows the watermark passed, the checkpoint carries them
        // sealed, and later events reopen them.
        let n = all.len();
        let split = split.index(n + 1);
        let resume = resume.index(split + 1);
        let Restart { mut straight, before, mut after } = restart(&all, split);
        prop_assert_eq!(figures_and_windows(&after), figures_and_windows(&before));
        for (position, e) in all.iter().enumerate().skip(resume) {
            let _ = after.apply(e, position as u64);
        }
        let _ = after.publish();
        let _ = straight.publish();
        prop_assert_eq!(figures_and_windows(&after), figures_and_windows(&straight));
    }
}

/// Applies `all[..split]`, publishing and checkpointing into a changelog
/// every `every` events (each checkpoint writing about `budget` tombstones,
/// the rest put off), then once more; keeps only the first `cut` records
/// of that last batch, as a crash at-least-once may. Restores from the
/// changelog, reads the input again from the start (what is in a restored
/// state is skipped as already applied), and checks the two states agree,
/// then that they take the rest of the events alike.
fn pieces_round_trip(
    all: &[Event<'_>],
    split: usize,
    every: usize,
    cut: Option<Index>,
    budget: usize,
    config: AggregatorConfig,
) -> Result<(), TestCaseError> {
    let mut before = PartitionAggregator::new(config.clone());
    before.set_tombstone_budget(budget);
    let mut changelog = Changelog::default();
    for (position, e) in all[..split].iter().enumerate() {
        let _ = before.apply(e, position as u64);
        if position % every == 0 {
            let _ = before.publish();
            changelog.write(before.checkpoints());
        }
    }
    let _ = before.publish();
    let mut last = before.checkpoints();
    if let Some(cut) = cut {
        last.truncate(cut.index(last.len() + 1));
    } else {
        changelog.write(last.clone());
        // What was put off goes out with the next checkpoints.
        let mut owed = changelog.clone();
        for _ in 0..1000 {
            if before.tombstones_due() == 0 {
                break;
            }
            owed.write(before.checkpoints());
        }
        prop_assert_eq!(before.tombstones_due(), 0);
        let stray = crate::changelog::restore(&owed.0)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .stray_pieces;
        prop_assert_eq!(stray, 0, "every forgotten piece is tombstoned");
    }
    changelog.write(last);
    let mut after = changelog.restore(config);
    for (position, e) in all[..split].iter().enumerate() {
        let _ = after.apply(e, position as u64);
    }
    // Revisions aside: a stream restored from an earlier checkpoint has
    // published less (the engine moves its revisions on).
    let unrevised = |agg: &PartitionAggregator| {
        let mut figures = figures(agg);
        for (rollup, _) in &mut figures {
            rollup.revision = 0;
        }
        figures
    };
    prop_assert_eq!(unrevised(&after), unrevised(&before));
    for (position, e) in all.iter().enumerate().skip(split) {
        let position = position as u64;
        prop_assert_eq!(
            after.apply(e, position),
            before.apply(e, position),
            "at {}",
            position
        );
    }
    prop_assert_eq!(unrevised(&after), unrevised(&before));
    Ok(())
}

proptest! {
    #[test]
    fn checkpoints_in_pieces_restore_the_duplicate_filter_exactly(
        (all, split, every) in events_every(true, 30_000)
            .prop_flat_map(|v| (Just(v), any::<Index>(), 1..8usize)),
        budget in prop_oneof![Just(TOMBSTONES_PER_CHECKPOINT), 1..4usize],
    ) {
        // A one-minute duplicate horizon over six minutes of events: the
        // filter's generations and the viewers' presence go to the changelog
        // in pieces over many checkpoints, and are forgotten and tombstoned
        // as the watermark moves.
        let config = AggregatorConfig {
            dedup_horizon_ms: 60_000,
            ..AggregatorConfig::default()
        };
        let split = split.index(all.len() + 1);
        // With a small budget, tombstones wait for later checkpoints: the
        // restore leaves the pieces still to tombstone aside.
        pieces_round_trip(&all, split, every, None, budget, config)?;
    }

    #[test]
    fn a_checkpoint_batch_cut_short_loses_no_event(
        (all, split, every, cut) in events_every(true, 30_000)
            .prop_flat_map(|v| (Just(v), any::<Index>(), 1..8usize, any::<Index>()))
    ) {
        // At-least-once, a crash can land some of a batch's changelog
        // records and not the rest: pieces without their head, heads of
        // some streams and not others. Every stream restores from a head
        // and the pieces it counted, and reading the input again gives the
        // same state. (The default 10-minute horizon: over six minutes of
        // events no generation is forgotten, so which ids are still known
        // cannot depend on when each run happened to publish.)
        let split = split.index(all.len() + 1);
        pieces_round_trip(
            &all,
            split,
            every,
            Some(cut),
            TOMBSTONES_PER_CHECKPOINT,
            AggregatorConfig::default(),
        )?;
    }
}
