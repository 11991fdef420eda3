//! Ended streams kept packed ([`Frozen`]): what a reader, a later event,
//! a checkpoint or a restore sees of them is what they would see unpacked.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::event::Action;
use crate::testkit::{self, event, impression, purchase, refund, Changelog, Feed};

const MIN: i64 = 60_000;
/// A round epoch-ms origin, on a window boundary.
const T0: i64 = 1_764_115_200_000;

/// A stream that sold, ended 31 minutes after its last event, was
/// published and checkpointed into `changelog`; then the watermark passed
/// its windows' retention, and that scan packed it (unless `packs` is off).
fn ended_and_saved_with(packs: bool, changelog: &mut Changelog) -> Feed {
    let mut f = Feed::new();
    f.agg.packs_ended = packs;
    // A hundred alike, so that the table's fixed cost does not hide theirs.
    for n in 0..100 {
        let stream_id = format!("live-{n}");
        let mut sold = event(
            "e-s",
            &stream_id,
            "u1",
            T0 + 2_000,
            purchase("p1", "o1", 2, 350),
        );
        sold.seller_id = Some("shop-1".into());
        let _ = f.send_event(&sold);
        let _ = f.send_event(&event("e-1", &stream_id, "u1", T0, Action::View));
        let _ = f.send_event(&event("e-2", &stream_id, "u2", T0 + 1_000, Action::View));
        let _ = f.send_event(&event(
            "e-3",
            &stream_id,
            "u2",
            T0 + 1_500,
            impression("p2"),
        ));
    }
    let _ = f.agg.publish();
    changelog.write(f.agg.checkpoints());
    f.agg.advance_watermark(T0 + 31 * MIN);
    assert!(f.agg.publish().iter().all(|p| p.rollup.is_final));
    f.agg.advance_watermark(T0 + 32 * MIN);
    let _ = f.agg.publish();
    assert!(
        f.agg.streams.contains_key("live-1"),
        "not packed before its final rollup is checkpointed"
    );
    changelog.write(f.agg.checkpoints());
    f.agg.advance_watermark(T0 + (31 + 62) * MIN);
    let _ = f.agg.publish();
    changelog.write(f.agg.checkpoints());
    f
}

fn ended_and_saved(changelog: &mut Changelog) -> Feed {
    ended_and_saved_with(true, changelog)
}

#[test]
fn an_ended_stream_is_packed_once_published_and_checkpointed() {
    let packed = ended_and_saved(&mut Changelog::default());
    let plain = ended_and_saved_with(false, &mut Changelog::default());
    assert!(packed.agg.ended.contains_key("live-1"));
    assert!(!packed.agg.streams.contains_key("live-1"));
    assert!(plain.agg.ended.is_empty());
    assert_eq!(
        (packed.agg.packed_count(), plain.agg.packed_count()),
        (100, 0)
    );

    // Readers see it as it was.
    assert!(packed.rollup().is_final);
    assert_eq!(packed.rollup(), plain.rollup());
    assert_eq!(packed.products(), plain.products());
    assert_eq!(packed.agg.windows("live-1"), plain.agg.windows("live-1"));
    assert_eq!(packed.agg.stream_ids(), plain.agg.stream_ids());
    assert_eq!(packed.agg.stream_count(), 100);
    let bytes = |f: &Feed| f.agg.checkpoint("live-1").unwrap().to_bytes();
    assert_eq!(bytes(&packed), bytes(&plain));

    // And it holds far less.
    let (packed, plain) = (packed.agg.state_bytes(), plain.agg.state_bytes());
    assert!(packed.ended_packed > 0);
    assert_eq!((packed.distinct_counts, packed.products), (0, 0));
    assert!(
        packed.total() * 2 < plain.total(),
        "packed {packed:?}, plain {plain:?}"
    );
}

#[test]
fn a_later_event_reopens_a_packed_stream_from_its_figures() {
    let mut f = ended_and_saved(&mut Changelog::default());
    let before = f.rollup();
    assert_eq!(f.agg.ended.len(), 100);

    // A refund days later: counted, and the stream is live again.
    let late = event(
        "e-r",
        "live-1",
        "u1",
        T0 + 3 * 24 * 60 * MIN,
        refund("p1", "o1", 1, 350),
    );
    assert_eq!(f.send_event(&late), Outcome::Counted);
    assert_eq!(f.agg.ended.len(), 99);
    assert!(f.agg.streams.contains_key("live-1"));
    let published = f.agg.publish();
    assert_eq!(published.len(), 1);
    let after = &published[0].rollup;
    assert!(!after.is_final);
    assert_eq!(after.revision, before.revision + 1);
    assert_eq!(
        (after.views, after.unique_viewers, after.orders, after.gmv),
        (
            before.views,
            before.unique_viewers,
            before.orders,
            before.gmv
        )
    );
    assert_eq!((after.refunds, after.net_gmv), (350, before.gmv - 350));
    assert_eq!(after.seller_id.as_deref(), Some("shop-1"));
    assert_eq!(after.currency, before.currency);
    // Its first purchase's currency still holds.
    let mut other = event(
        "e-x",
        "live-1",
        "u1",
        T0 + 3 * 24 * 60 * MIN + 1,
        purchase("p1", "o2", 1, 5),
    );
    if let Action::Purchase(line) = &mut other.action {
        line.currency = crate::testkit::EUR;
    }
    assert_eq!(
        f.send_event(&other),
        Outcome::Invalid(InvalidReason::CurrencyMismatch)
    );
}

#[test]
fn a_restored_stream_packed_still_skips_what_it_already_applied() {
    let mut changelog = Changelog::default();
    let saved = ended_and_saved(&mut changelog).rollup();
    let mut restored = changelog.restore(AggregatorConfig::default());
    restored.skip_revisions(3);
    // Its last head still holds the windows that expired after it: the
    // first scan packs it, with nothing to publish.
    restored.advance_watermark(T0 + (31 + 63) * MIN);
    assert!(restored.publish().is_empty());
    assert_eq!(restored.ended.len(), 100);
    // The input read again from an old offset: already in the state (its
    // duplicate filter went when it ended).
    let again = event(
        "e-s",
        "live-1",
        "u1",
        T0 + 2_000,
        purchase("p1", "o1", 2, 350),
    );
    assert_eq!(restored.apply(&again, 0), Outcome::AlreadyApplied);
    // The moved revisions hold for the stream and for a window it opens now.
    let late = event("e-l", "live-1", "u1", T0 + 100 * MIN, Action::Like);
    assert_eq!(restored.apply(&late, 10), Outcome::Counted);
    let published = restored.publish();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].rollup.revision, saved.revision + 3 + 1);
    assert!(published[0].windows[0].revision > 3);
}

#[test]
fn revisions_move_and_restores_land_on_packed_streams() {
    let mut changelog = Changelog::default();
    let mut f = ended_and_saved(&mut changelog);
    let before = f.rollup();
    f.agg.skip_revisions(5);
    assert_eq!(f.rollup().revision, before.revision + 5);
    assert_eq!(f.agg.ended.len(), 100, "moved, and packed again");

    // A checkpoint with nothing live restores packed at once.
    let mut other = PartitionAggregator::new(AggregatorConfig::default());
    other.restore("live-3", f.agg.checkpoint("live-3").unwrap());
    assert!(other.ended.contains_key("live-3") && other.streams.is_empty());
    assert_eq!(other.rollup("live-3"), f.agg.rollup("live-3"));
    assert_eq!(
        other.rollup_and_products("live-3"),
        Some((
            f.agg.rollup("live-3").unwrap(),
            f.agg.products("live-3").unwrap()
        ))
    );

    // One restored over a packed stream replaces it, in one table only: its
    // head still holds windows, so it is unpacked until the next scan.
    let (_, checkpoint) = changelog
        .checkpoints()
        .into_iter()
        .find(|(id, _)| id == "live-1")
        .expect("checkpointed");
    f.agg.restore("live-1", checkpoint);
    assert!(f.agg.streams.contains_key("live-1"));
    assert!(!f.agg.ended.contains_key("live-1"));
    assert_eq!(f.rollup().revision, before.revision, "the checkpoint's");
    assert_eq!(f.agg.stream_count(), 100);
}

/// Events over a few minutes for three streams, in any order, with a short
/// idle timeout and retention, so that streams end, are packed and reopen.
fn short_lived() -> AggregatorConfig {
    AggregatorConfig {
        window_ms: 30_000,
        window_retention_ms: 30_000,
        idle_timeout_ms: 60_000,
        ..AggregatorConfig::default()
    }
}

/// One stream, viewer, step of 45 s, kind of event and product, each.
type Spec = (u8, u8, i64, u8, u8);

fn build(specs: &[Spec]) -> Vec<Event<'static>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, &(stream, viewer, step, kind, product))| {
            let product_id = format!("p{product}");
            let action = match kind {
                0 => Action::View,
                1 => Action::Leave,
                2 => impression(&product_id),
                3 => purchase(&product_id, &format!("o{i}"), 1, 100 + i64::from(product)),
                4 => refund(&product_id, "o0", 1, 100),
                _ => Action::Like,
            };
            // Ids come back past 70 events: duplicates, some of them after
            // their stream ended.
            let id = format!("e{}", i % 70);
            let stream_id = format!("live-{stream}");
            let viewer_id = format!("u{viewer}");
            event(&id, &stream_id, &viewer_id, T0 + step * 45_000, action)
        })
        .collect()
}

/// Feeds `events` to an aggregator that packs ended streams and to one that
/// does not, publishing every `every` events and taking all checkpoints or
/// only first ones in turn; before event `split` both restart from their
/// changelog and read the input again from event `resume`. Every outcome,
/// publication, checkpoint and reader's answer must be the same. `true`
/// when a stream was packed along the way.
fn packing_changes_nothing(
    events: &[Event<'_>],
    every: usize,
    split: usize,
    resume: usize,
) -> Result<bool, TestCaseError> {
    let config = short_lived();
    let plain_from = |changelog: &Changelog| {
        let mut agg = testkit::aggregator(config.clone());
        agg.packs_ended = false;
        for (stream_id, checkpoint) in changelog.checkpoints() {
            agg.restore(&stream_id, checkpoint);
        }
        agg
    };
    let mut packing = testkit::aggregator(config.clone());
    let mut plain = plain_from(&Changelog::default());
    let mut changelog = Changelog::default();
    let mut packed_any = false;
    let positions = (0..split).chain(resume..events.len());
    for (step, position) in positions.enumerate() {
        if step == split {
            packing = changelog.restore(config.clone());
            plain = plain_from(&changelog);
            packing.skip_revisions(2);
            plain.skip_revisions(2);
        }
        let e = &events[position];
        let outcome = packing.apply(e, position as u64);
        prop_assert_eq!(outcome, plain.apply(e, position as u64), "at {}", position);
        if step % every == 0 {
            let (a, b) = (packing.publish(), plain.publish());
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
            let (a, b) = if step % (3 * every) == 0 {
                (packing.first_checkpoints(), plain.first_checkpoints())
            } else {
                (packing.checkpoints(), plain.checkpoints())
            };
            prop_assert_eq!(&a, &b);
            changelog.write(a);
            packed_any |= !packing.ended.is_empty();
        }
    }
    let (a, b) = (packing.publish(), plain.publish());
    prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
    prop_assert_eq!(packing.checkpoints(), plain.checkpoints());
    prop_assert_eq!(packing.stream_ids(), plain.stream_ids());
    for id in plain.stream_ids() {
        prop_assert_eq!(packing.rollup(id), plain.rollup(id));
        prop_assert_eq!(packing.products(id), plain.products(id));
        prop_assert_eq!(packing.windows(id), plain.windows(id));
        prop_assert_eq!(
            packing.checkpoint(id).map(|c| c.to_bytes()),
            plain.checkpoint(id).map(|c| c.to_bytes())
        );
    }
    prop_assert!(plain.ended.is_empty());
    Ok(packed_any)
}

#[test]
fn packing_ended_streams_changes_no_outcome_publication_or_checkpoint() {
    let specs = prop::collection::vec((0u8..3, 0u8..5, 0i64..16, 0u8..6, 0u8..4), 0..100);
    let strategy = specs.prop_flat_map(|v| (Just(v), 1..6usize, any::<Index>(), any::<Index>()));
    let packed = std::cell::Cell::new(0);
    let config = proptest::test_runner::Config {
        cases: 256,
        ..proptest::test_runner::Config::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&strategy, |(specs, every, split, resume)| {
            let split = split.index(specs.len() + 1);
            let resume = resume.index(split + 1);
            if packing_changes_nothing(&build(&specs), every, split, resume)? {
                packed.set(packed.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    // The cases must reach the packing for the comparison to mean anything.
    let packed = packed.get();
    assert!(packed >= 20, "only {packed} of 256 cases packed a stream");
}
