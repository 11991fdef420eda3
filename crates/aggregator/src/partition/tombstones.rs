//! Tombstones put off ([`TOMBSTONES_PER_CHECKPOINT`]): when many streams
//! end or expire at once, their checkpoints write every head but spread the
//! tombstones over the next ones, and the changelog restores the same state
//! at every step.

use std::collections::HashSet;

use super::*;
use crate::changelog::{self, Key};
use crate::event::Action;
use crate::testkit::{event, impression, purchase, Changelog, Feed};

const MIN: i64 = 60_000;
/// A round epoch-ms origin, on a window boundary.
const T0: i64 = 1_764_115_200_000;
const STREAMS: usize = 50;

/// `STREAMS` streams that viewed and sold, checkpointed into `changelog`
/// twice, so that their duplicate filters have two pieces each; then the
/// budget is set to `budget` and they end, which forgets those pieces.
fn ended(budget: usize, changelog: &mut Changelog) -> Feed {
    let mut f = Feed::new();
    let rounds: [&[(&str, &str, i64, Action<'static>)]; 2] = [
        &[
            ("e-1", "u1", T0, Action::View),
            ("e-2", "u2", T0 + 1_000, Action::View),
            ("e-3", "u2", T0 + 1_500, impression("p2")),
        ],
        &[
            ("e-4", "u1", T0 + 2_000, purchase("p1", "o1", 2, 350)),
            ("e-5", "u2", T0 + 2_500, Action::Leave),
        ],
    ];
    for round in rounds {
        for n in 0..STREAMS {
            for (id, viewer, ts, action) in round {
                let e = event(id, &format!("live-{n}"), viewer, *ts, action.clone());
                assert_eq!(f.send_event(&e), Outcome::Counted);
            }
        }
        let _ = f.agg.publish();
        changelog.write(f.agg.checkpoints());
    }
    f.agg.set_tombstone_budget(budget);
    f.agg.advance_watermark(T0 + 32 * MIN);
    assert!(f.agg.publish().iter().all(|p| p.rollup.is_final));
    f
}

/// Moves the watermark past the windows' retention (`minutes` more after
/// it): the ended streams hold nothing live, and a scan packs those that
/// owe no tombstones.
fn expire(f: &mut Feed, minutes: i64) {
    f.agg.advance_watermark(T0 + (32 + 62 + minutes) * MIN);
    let _ = f.agg.publish();
}

fn tombstones(records: &[Record]) -> Vec<(String, PieceKind, i64, u32)> {
    records
        .iter()
        .filter(|r| r.value.is_empty())
        .map(|r| match Key::parse(&r.key) {
            Some(Key::Piece {
                stream_id,
                kind,
                number,
                piece,
            }) => (stream_id.to_owned(), kind, number, piece),
            other => panic!("a tombstone for a piece, not {other:?}"),
        })
        .collect()
}

fn strays(changelog: &Changelog) -> usize {
    changelog::restore(&changelog.0)
        .expect("the changelog restores")
        .stray_pieces
}

/// Every stream's figures as a restore from `changelog` gives them.
fn restored(changelog: &Changelog) -> Vec<StreamRollup> {
    changelog.restore(AggregatorConfig::default()).rollups()
}

#[test]
fn ending_streams_spread_their_tombstones_over_checkpoints() {
    let mut changelog = Changelog::default();
    let mut f = ended(1, &mut changelog);
    let figures = f.agg.rollups();

    let mut batches = 0;
    let mut written = HashSet::new();
    loop {
        let records = f.agg.checkpoints();
        let batch = tombstones(&records);
        // A budget of one: the part of one generation or epoch a batch.
        let parts: HashSet<_> = batch.iter().map(|(s, k, n, _)| (s, *k, *n)).collect();
        assert!(parts.len() <= 1, "batch {batches}: {parts:?}");
        written.extend(batch);
        changelog.write(records);
        batches += 1;
        // Every step restores the same figures; the pieces still to
        // tombstone are strays the restore leaves aside.
        assert_eq!(restored(&changelog), figures, "after batch {batches}");
        // Not packed while it owes tombstones: packing forgets them.
        expire(&mut f, batches);
        assert_eq!(f.agg.packed_count(), STREAMS - f.agg.tombstones_due());
        if f.agg.tombstones_due() == 0 {
            break;
        }
        assert!(strays(&changelog) > 0, "after batch {batches}");
        assert!(batches < 10 * STREAMS as i64, "tombstones never finish");
    }
    assert!(
        batches >= STREAMS as i64,
        "{batches} batches for {STREAMS} streams' pieces"
    );
    assert_eq!(strays(&changelog), 0, "every forgotten piece tombstoned");
    assert_eq!(
        written.len(),
        tombstones(&unbudgeted()).len(),
        "the same tombstones as in one batch"
    );
    assert_eq!(f.agg.packed_count(), STREAMS);
    assert_eq!(f.agg.rollups(), figures);
}

/// The ending's checkpoint with the default budget: every tombstone in it.
fn unbudgeted() -> Vec<Record> {
    let mut f = ended(TOMBSTONES_PER_CHECKPOINT, &mut Changelog::default());
    let records = f.agg.checkpoints();
    assert_eq!(f.agg.tombstones_due(), 0);
    records
}

#[test]
fn a_final_checkpoint_writes_every_tombstone_owed() {
    let mut changelog = Changelog::default();
    let mut f = ended(1, &mut changelog);
    changelog.write(f.agg.checkpoints());
    assert!(f.agg.tombstones_due() > 0);
    assert!(strays(&changelog) > 0);
    changelog.write(f.agg.final_checkpoints());
    assert_eq!(f.agg.tombstones_due(), 0);
    assert_eq!(strays(&changelog), 0);
}

#[test]
fn a_stream_published_again_writes_its_owed_tombstones_after_its_head() {
    let mut changelog = Changelog::default();
    let mut f = ended(1, &mut changelog);
    changelog.write(f.agg.checkpoints());
    assert!(f.agg.tombstones_due() > 0);
    // A late purchase for every stream: each is published, so its next
    // checkpoint writes its head, then what it owes (the budget spent by
    // the first).
    for n in 0..STREAMS {
        let late = event(
            "e-late",
            &format!("live-{n}"),
            "u3",
            T0 + 3 * MIN,
            purchase("p1", "o2", 1, 100),
        );
        assert_eq!(f.send_event(&late), Outcome::Counted);
    }
    let _ = f.agg.publish();
    let records = f.agg.checkpoints();
    let heads = records
        .iter()
        .filter(|r| matches!(Key::parse(&r.key), Some(Key::Head(_))))
        .count();
    assert_eq!(heads, STREAMS);
    changelog.write(records);
    assert_eq!(restored(&changelog), f.agg.rollups());
    while f.agg.tombstones_due() > 0 {
        changelog.write(f.agg.checkpoints());
    }
    assert_eq!(strays(&changelog), 0);
    assert_eq!(restored(&changelog), f.agg.rollups());
}
