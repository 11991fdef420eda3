//! Event time: windows, the watermark, late data, the duplicate horizon and
//! the stream lifecycle.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::event::Action;
use crate::rollup::RollupKind;
use crate::testkit::{applied, event, purchase, Changelog, Feed};

const MIN: i64 = 60_000;
/// A round epoch-ms origin, on a window boundary.
const T0: i64 = 1_764_115_200_000;

/// Each window's concurrent and peak viewers, in order.
fn presence(windows: &[StreamRollup]) -> Vec<(u64, u64)> {
    windows
        .iter()
        .map(|w| (w.concurrent_viewers, w.peak_concurrent_viewers))
        .collect()
}

fn windows_of(publications: &[Publication], stream_id: &str) -> Vec<StreamRollup> {
    publications
        .iter()
        .filter(|p| p.rollup.stream_id == stream_id)
        .flat_map(|p| p.windows.clone())
        .collect()
}

#[test]
fn events_land_in_their_tumbling_window_with_every_figure() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 1_000, Action::View);
    let _ = f.send("u2", T0 + 2_000, Action::View);
    let _ = f.send("u1", T0 + 3_000, purchase("p1", "o1", 2, 500));
    let _ = f.send("u1", T0 + MIN + 10, Action::View);
    let _ = f.send("u3", T0 + MIN + 20, purchase("p2", "o2", 1, 300));
    let published = f.agg.publish();
    let windows = windows_of(&published, "live-1");
    assert_eq!(windows.len(), 2);
    let (w0, w1) = (&windows[0], &windows[1]);
    assert_eq!(
        (w0.kind, w0.window_start, w0.window_end),
        (RollupKind::Window, Some(T0), Some(T0 + MIN))
    );
    assert_eq!(
        (
            w0.views,
            w0.unique_viewers,
            w0.orders,
            w0.gmv,
            w0.unique_buyers
        ),
        (2, 2, 1, 1000, 1)
    );
    assert_eq!(w0.commission, 100);
    assert_eq!(w0.gpm, Some(500_000));
    assert_eq!(
        (w0.first_event_ts, w0.last_event_ts),
        (T0 + 1_000, T0 + 3_000)
    );
    assert_eq!(w1.window_start, Some(T0 + MIN));
    assert_eq!(
        (w1.views, w1.unique_viewers, w1.orders, w1.gmv),
        (1, 1, 1, 300)
    );
    assert_eq!(w0.revision, 1);
    assert!(!w0.is_final);
    // Nothing new: nothing republished.
    assert!(f.agg.publish().is_empty());
    // The cumulative figures hold both windows.
    let total = f.rollup();
    assert_eq!((total.views, total.unique_viewers, total.gmv), (3, 2, 1300));
}

#[test]
fn only_changed_windows_are_republished_with_a_new_revision() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0, Action::View);
    let _ = f.send("u1", T0 + MIN, Action::View);
    let _ = f.agg.publish();
    let _ = f.send("u2", T0 + MIN + 5, Action::Like);
    let windows = windows_of(&f.agg.publish(), "live-1");
    assert_eq!(windows.len(), 1);
    assert_eq!(
        (
            windows[0].window_start,
            windows[0].revision,
            windows[0].likes
        ),
        (Some(T0 + MIN), 2, 1)
    );
}

#[test]
fn a_late_event_within_lateness_lands_in_its_window() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + MIN + 3_000, Action::View);
    // Watermark = T0 + MIN − 2 s: the first window is still open.
    assert_eq!(f.agg.watermark(), Some(T0 + MIN - 2_000));
    let _ = f.send("u2", T0 + 59_000, Action::View);
    assert_eq!(f.agg.take_late(), 0);
    let windows = windows_of(&f.agg.publish(), "live-1");
    assert_eq!(
        windows
            .iter()
            .map(|w| (w.window_start, w.views))
            .collect::<Vec<_>>(),
        [(Some(T0), 1), (Some(T0 + MIN), 1)]
    );
}

#[test]
fn an_event_after_the_window_closed_gives_a_corrected_revision() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 1_000, purchase("p1", "o1", 1, 100));
    let first = windows_of(&f.agg.publish(), "live-1");
    assert_eq!((first[0].gmv, first[0].revision), (100, 1));
    // Ten minutes later in event time: the first window closed long ago.
    let _ = f.send("u2", T0 + 10 * MIN, Action::View);
    let _ = f.agg.publish();
    let _ = f.send("u3", T0 + 2_000, purchase("p1", "o2", 1, 250));
    assert_eq!(f.agg.take_late(), 0, "still retained: not late");
    let corrected = windows_of(&f.agg.publish(), "live-1");
    assert_eq!(corrected.len(), 1);
    assert_eq!(
        (
            corrected[0].window_start,
            corrected[0].gmv,
            corrected[0].orders,
            corrected[0].revision
        ),
        (Some(T0), 350, 2, 2)
    );
    assert_eq!(f.rollup().gmv, 350);
}

#[test]
fn an_event_beyond_retention_is_late_but_still_counted_cumulatively() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0, Action::View);
    let _ = f.send("u1", T0 + 2 * 3_600_000, Action::View);
    let _ = f.agg.publish();
    assert_eq!(
        f.agg.windows("live-1").unwrap().len(),
        1,
        "the old window expired"
    );
    let _ = f.send("u2", T0 + 30_000, purchase("p1", "o1", 1, 999));
    assert_eq!(f.agg.take_late(), 1);
    assert_eq!(f.agg.take_late(), 0, "taken once");
    let published = f.agg.publish();
    assert!(
        windows_of(&published, "live-1").is_empty(),
        "no window for a late event"
    );
    assert_eq!(published[0].rollup.gmv, 999);
    assert_eq!(published[0].rollup.orders, 1);
}

#[test]
fn a_pushed_watermark_moves_a_quiet_partition_on() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0, Action::View);
    let _ = f.agg.publish();
    f.agg.advance_watermark(T0 - 5 * MIN);
    assert_eq!(f.agg.watermark(), Some(T0 - 5_000), "never moves back");
    f.agg.advance_watermark(T0 + 2 * 3_600_000);
    let ended = f.agg.publish();
    assert_eq!(ended.len(), 1, "the idle stream ends");
    assert!(ended[0].rollup.is_final);
    assert!(
        f.agg.windows("live-1").unwrap().is_empty(),
        "its windows expired"
    );
}

#[test]
fn an_idle_stream_ends_and_a_later_event_reopens_it_from_its_figures() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0, Action::View);
    let _ = f.send("u2", T0, Action::View);
    let _ = f.send("u1", T0 + 1, purchase("p1", "o1", 1, 700));
    let _ = f.agg.publish();
    assert_eq!(f.rollup().concurrent_viewers, 2);
    // Another stream of the partition moves event time 31 minutes on.
    let other = event("x", "live-2", "u9", T0 + 31 * MIN + 5_000, Action::Like);
    let _ = f.agg.apply(&other, 100);
    let published = f.agg.publish();
    let ended = published
        .iter()
        .find(|p| p.rollup.stream_id == "live-1")
        .expect("final rollup");
    assert!(ended.rollup.is_final);
    assert_eq!(ended.rollup.concurrent_viewers, 0);
    assert_eq!(
        (
            ended.rollup.views,
            ended.rollup.gmv,
            ended.rollup.unique_viewers
        ),
        (2, 700, 2)
    );
    let state_after = f.agg.state_bytes_estimate();
    assert!(f.agg.rollup("live-2").is_some_and(|r| !r.is_final));
    // The API keeps serving it; a new event reopens it, never from zero.
    let _ = f.send("u3", T0 + 32 * MIN, Action::View);
    let reopened = f.rollup();
    assert!(!reopened.is_final);
    assert_eq!(
        (reopened.views, reopened.gmv, reopened.concurrent_viewers),
        (3, 700, 1)
    );
    assert!(state_after > 0);
}

#[test]
fn duplicates_are_caught_within_the_horizon_and_forgotten_after() {
    let mut f = Feed::new();
    let original = event("dup", "live-1", "u1", T0, Action::Like);
    assert_eq!(f.send_event(&original), Outcome::Counted);
    let _ = f.send("u2", T0 + 9 * MIN, Action::Like);
    assert_eq!(
        f.send_event(&original),
        Outcome::Duplicate,
        "9 minutes later"
    );
    // Event time moves 21 minutes on: ids are forgotten in generations of
    // one horizon (10 min) once the watermark is a horizon past the
    // generation's end, i.e. within two horizons and the lateness, which
    // bounds the state; the contract asks for 10 minutes, no more.
    let _ = f.send("u2", T0 + 21 * MIN, Action::Like);
    let _ = f.agg.publish();
    let late_copy = event("dup", "live-1", "u1", T0, Action::Like);
    assert_eq!(
        f.send_event(&late_copy),
        Outcome::Counted,
        "forgotten after the horizon"
    );
    let recent = event("e-3", "live-1", "u2", T0 + 21 * MIN, Action::Like);
    assert_eq!(
        f.send_event(&recent),
        Outcome::Duplicate,
        "recent ids are kept"
    );
}

#[test]
fn the_peak_is_a_maximum_over_event_time_whatever_the_arrival_order() {
    // u1 is in the room 0–10 s, u2 20–30 s: never together, so the peak is 1,
    // even though u2's view arrives before u1's leave.
    let mut f = Feed::new();
    let _ = f.send("u1", T0, Action::View);
    let _ = f.send("u2", T0 + 20_000, Action::View);
    let _ = f.send("u1", T0 + 10_000, Action::Leave);
    let _ = f.send("u2", T0 + 30_000, Action::Leave);
    let r = f.rollup();
    assert_eq!((r.concurrent_viewers, r.peak_concurrent_viewers), (0, 1));
    // Settled in event-time order as the watermark passes: the same.
    let _ = f.send("u3", T0 + 60_000, Action::Like);
    let r = f.rollup();
    assert_eq!((r.concurrent_viewers, r.peak_concurrent_viewers), (0, 1));
    // A view back at 25 s overlaps u2's stay: two at once.
    let _ = f.send("u1", T0 + 25_000, Action::View);
    let r = f.rollup();
    assert_eq!((r.concurrent_viewers, r.peak_concurrent_viewers), (1, 2));
}

#[test]
fn a_window_past_retention_by_its_next_publication_still_publishes_its_changes() {
    // Retention 2 minutes: by the time the batch is published, the
    // watermark (245 s) is past the first window's end plus retention.
    let config = AggregatorConfig {
        window_retention_ms: 2 * MIN,
        ..AggregatorConfig::default()
    };
    let mut f = Feed::with(config.clone());
    let _ = f.send("u1", T0 + 1_000, Action::Like);
    let _ = f.send("u1", T0 + 250_000, Action::Like);
    let published = f.agg.publish();
    let windows = windows_of(&published, "live-1");
    let starts: Vec<_> = windows.iter().map(|w| (w.window_start, w.likes)).collect();
    assert_eq!(starts, [(Some(T0), 1), (Some(T0 + 4 * MIN), 1)]);
    assert_eq!(f.agg.take_late(), 0, "nothing was too late");

    // A correction for a window already published, in the same batch as
    // an event that takes the watermark past its retention.
    let mut f = Feed::with(config);
    let _ = f.send("u1", T0 + 1_000, Action::Like);
    let _ = f.agg.publish();
    let _ = f.send("u1", T0 + 2_000, Action::Comment);
    let _ = f.send("u1", T0 + 190_000, Action::Like);
    let published = f.agg.publish();
    let first = windows_of(&published, "live-1")
        .into_iter()
        .find(|w| w.window_start == Some(T0))
        .expect("the first window is published again");
    assert_eq!((first.revision, first.likes, first.comments), (2, 1, 1));
}

#[test]
fn a_late_presence_event_comes_after_the_waiting_ones_the_watermark_passed() {
    // u1 is in the room 1–2 s. The like at 10 s moves the watermark to 5 s,
    // past u1's view, which still waits: the late leave must not settle
    // before it, or u1 is never counted present.
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 1_000, Action::View);
    let _ = f.send("u2", T0 + 10_000, Action::Like);
    let _ = f.send("u1", T0 + 2_000, Action::Leave);
    let r = f.rollup();
    assert_eq!((r.concurrent_viewers, r.peak_concurrent_viewers), (0, 1));

    // The same when another stream's event moves the partition's watermark.
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 1_000, Action::View);
    let _ = f.send("u2", T0 + 1_001, Action::View);
    let _ = f.send_event(&event("o", "other", "x", T0 + 6_003, Action::Like));
    let _ = f.send("u1", T0 + 1_002, Action::Leave);
    let r = f.rollup();
    assert_eq!((r.concurrent_viewers, r.peak_concurrent_viewers), (1, 2));
}

#[test]
fn a_handover_at_one_instant_does_not_raise_the_peak() {
    // u1 leaves at 1 s as u2 arrives: one viewer in the room at every
    // instant, in every arrival order, waiting or settled.
    let events = [
        ("u1", T0, Action::View),
        ("u1", T0 + 1_000, Action::Leave),
        ("u2", T0 + 1_000, Action::View),
    ];
    for order in [[0, 1, 2], [0, 2, 1], [2, 0, 1], [2, 1, 0]] {
        let mut f = Feed::new();
        for at in order {
            let (viewer, ts, action) = events[at].clone();
            let _ = f.send(viewer, ts, action);
        }
        let r = f.rollup();
        assert_eq!(
            (r.concurrent_viewers, r.peak_concurrent_viewers),
            (1, 1),
            "arrival order {order:?}, waiting"
        );
        // A presence event a minute on moves the watermark past the three
        // and settles them, in event-time order.
        let _ = f.send("u9", T0 + 60_000, Action::Leave);
        let r = f.rollup();
        assert_eq!(
            (r.concurrent_viewers, r.peak_concurrent_viewers),
            (1, 1),
            "arrival order {order:?}, settled"
        );
    }
}

#[test]
fn a_leave_and_a_view_of_one_viewer_at_one_instant_leave_them_out() {
    for leave_first in [true, false] {
        let mut f = Feed::new();
        let (first, second) = if leave_first {
            (Action::Leave, Action::View)
        } else {
            (Action::View, Action::Leave)
        };
        let _ = f.send("u1", T0, first);
        let _ = f.send("u1", T0, second);
        let r = f.rollup();
        assert_eq!(
            (r.concurrent_viewers, r.peak_concurrent_viewers),
            (0, 0),
            "leave first: {leave_first}"
        );
    }
}

#[test]
fn an_ended_stream_keeps_the_peak_of_presence_events_still_waiting() {
    // Two views that never settled (no later event of this partition until
    // another stream, 40 minutes on, ends this one).
    let mut f = Feed::new();
    let _ = f.send("u1", T0, Action::View);
    let _ = f.send("u2", T0 + 10_000, Action::View);
    assert_eq!(f.rollup().peak_concurrent_viewers, 2);
    let other = event("o", "other", "x", T0 + 40 * MIN, Action::Like);
    let _ = f.send_event(&other);
    let published = f.agg.publish();
    let last = published
        .iter()
        .find(|p| p.rollup.stream_id == "live-1")
        .expect("the ended stream is published");
    assert!(last.rollup.is_final);
    assert_eq!(
        (
            last.rollup.concurrent_viewers,
            last.rollup.peak_concurrent_viewers
        ),
        (0, 2)
    );
}

#[test]
fn pending_presence_survives_a_checkpoint_round_trip() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0, Action::View);
    let _ = f.send("u2", T0 + 1_000, Action::View);
    let _ = f.agg.publish();
    let bytes = f.agg.checkpoint("live-1").unwrap().to_bytes();
    let mut restored = PartitionAggregator::new(AggregatorConfig::default());
    restored.restore("live-1", StreamCheckpoint::from_bytes(&bytes).unwrap());
    let late_leave = event("l", "live-1", "u1", T0 + 500, Action::Leave);
    let _ = restored.apply(&late_leave, 10);
    let r = restored.rollup("live-1").unwrap();
    assert_eq!(
        (r.concurrent_viewers, r.peak_concurrent_viewers),
        (1, 1),
        "u1 left before u2 came"
    );
}

#[test]
fn windows_survive_a_checkpoint_round_trip() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0, purchase("p1", "o1", 1, 100));
    let _ = f.send("u1", T0 + MIN, purchase("p1", "o2", 1, 200));
    let _ = f.agg.publish();
    let bytes = f.agg.checkpoint("live-1").unwrap().to_bytes();
    let mut restored = PartitionAggregator::new(AggregatorConfig::default());
    restored.restore("live-1", StreamCheckpoint::from_bytes(&bytes).unwrap());
    assert_eq!(restored.windows("live-1"), f.agg.windows("live-1"));
    assert_eq!(
        restored.watermark(),
        f.agg.watermark(),
        "the watermark follows restored state"
    );
    let late = event("late", "live-1", "u2", T0 + 5, purchase("p1", "o3", 1, 50));
    let _ = restored.apply(&late, 10);
    let windows = windows_of(&restored.publish(), "live-1");
    assert_eq!(
        (windows[0].gmv, windows[0].revision),
        (150, 2),
        "the revision keeps increasing"
    );
}

/// Events over a few minutes, in any order: nothing is past retention.
fn spread() -> impl Strategy<Value = Vec<Event<'static>>> {
    let one = (
        0u8..2,
        0u8..8,
        0i64..(5 * MIN),
        0u8..6,
        1u32..4,
        0i64..5_000,
    );
    prop::collection::vec(one, 1..80).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (stream, viewer, offset, kind, quantity, price))| {
                let action = match kind {
                    0 => Action::View,
                    1 => Action::Leave,
                    2 => crate::testkit::impression("p1"),
                    3 => crate::testkit::click("p1"),
                    4 => purchase("p1", &format!("o{}", i % 7), quantity, price),
                    _ => crate::testkit::refund("p1", "o1", quantity, price),
                };
                event(
                    &format!("e{i}"),
                    &format!("live-{stream}"),
                    &format!("u{viewer}"),
                    T0 + offset,
                    action,
                )
            })
            .collect()
    })
}

fn apply_all(events: &[Event<'_>]) -> (PartitionAggregator, Vec<StreamRollup>) {
    let agg = applied(events);
    let mut windows: Vec<StreamRollup> = agg
        .stream_ids()
        .iter()
        .flat_map(|id| agg.windows(id).unwrap())
        .collect();
    for w in &mut windows {
        // These events span minutes in any order, far beyond the allowed
        // lateness: a window's presence then depends on arrival order.
        w.concurrent_viewers = 0;
        w.peak_concurrent_viewers = 0;
    }
    (agg, windows)
}

/// Events of two streams over `span` ms from `from`, arriving out of order
/// but within the allowed lateness: sorted by time plus up to 4 s of delay.
/// A tide of views in the first half and leaves in the second makes counts
/// rise and fall. Each comes with whether the partition publishes after it.
fn delayed(
    from: i64,
    span: i64,
    most: usize,
    viewers: u8,
    delay: i64,
) -> impl Strategy<Value = Vec<(Event<'static>, bool)>> {
    let one = (0u8..2, 0..viewers, 0..span, 0u8..4, 0..delay, 0u8..8);
    prop::collection::vec(one, 1..most).prop_map(move |specs| {
        let mut specs: Vec<_> = specs.into_iter().enumerate().collect();
        specs.sort_by_key(|(i, (_, _, offset, _, delay, _))| (offset + delay, *i));
        specs
            .into_iter()
            .map(|(i, (stream, viewer, offset, kind, _, publish))| {
                let action = match kind {
                    0 => Action::View,
                    1 => Action::Leave,
                    2 => Action::Like,
                    _ if offset < span / 4 => Action::View,
                    _ => Action::Leave,
                };
                let e = event(
                    &format!("e{i}"),
                    &format!("live-{stream}"),
                    &format!("u{viewer}"),
                    from + offset,
                    action,
                );
                (e, publish == 0)
            })
            .collect()
    })
}

/// The contract's presence figures of the window `[start, end)`, by brute
/// force: viewers whose latest presence event by `ts` (a `leave` winning a
/// tie) is a `view`, at the window's end; and the highest such count at any
/// instant from just before its start to its end.
fn presence_by_event_time(
    events: &[(Event<'_>, bool)],
    stream_id: &str,
    start: i64,
    end: i64,
) -> (u64, u64) {
    let presence: Vec<(i64, bool, &str)> = events
        .iter()
        .map(|(e, _)| e)
        .filter(|e| e.stream_id == stream_id)
        .filter_map(|e| match e.action {
            Action::View => Some((e.ts, false, &*e.viewer_id)),
            Action::Leave => Some((e.ts, true, &*e.viewer_id)),
            _ => None,
        })
        .collect();
    let at = |instant: i64| {
        let mut latest: HashMap<&str, (i64, bool)> = HashMap::new();
        for &(ts, leave, viewer) in presence.iter().filter(|p| p.0 <= instant) {
            let now = latest.entry(viewer).or_insert((ts, leave));
            *now = (*now).max((ts, leave));
        }
        latest.values().filter(|(_, leave)| !leave).count() as u64
    };
    let peak = presence
        .iter()
        .filter(|p| (start..end).contains(&p.0))
        .map(|p| at(p.0))
        .chain([at(start - 1)])
        .max()
        .unwrap_or(0);
    (at(end - 1), peak)
}

proptest! {
    #[test]
    fn windows_sum_to_the_cumulative_figures(events in spread()) {
        let (agg, windows) = apply_all(&events);
        prop_assert_eq!(agg.take_late_peek(), 0);
        for total in agg.rollups() {
            let mine: Vec<&StreamRollup> = windows.iter().filter(|w| w.stream_id == total.stream_id).collect();
            let sum = |f: fn(&StreamRollup) -> i128| mine.iter().map(|w| f(w)).sum::<i128>();
            prop_assert_eq!(sum(|w| w.views.into()), i128::from(total.views));
            prop_assert_eq!(sum(|w| w.impressions.into()), i128::from(total.impressions));
            prop_assert_eq!(sum(|w| w.clicks.into()), i128::from(total.clicks));
            prop_assert_eq!(sum(|w| w.items_sold.into()), i128::from(total.items_sold));
            prop_assert_eq!(sum(|w| w.gmv.into()), i128::from(total.gmv));
            prop_assert_eq!(sum(|w| w.refunds.into()), i128::from(total.refunds));
            prop_assert_eq!(sum(|w| w.net_gmv.into()), i128::from(total.net_gmv));
        }
    }

    #[test]
    fn window_presence_is_by_event_time_within_the_allowed_lateness(
        events in prop_oneof![
            // Sparse, over minutes: presence settles as the watermark moves.
            delayed(T0, 3 * MIN, 300, 6, 4_000),
            // Dense, across one window's end: busy streams' projections.
            delayed(T0 + MIN - 6_000, 12_000, 500, 6, 4_000),
            // The same with a crowd: counts that rise and fall by dozens.
            delayed(T0 + MIN - 6_000, 12_000, 1_000, 120, 400),
        ]
    ) {
        let mut agg = PartitionAggregator::new(AggregatorConfig::default());
        let mut published: HashMap<(String, Option<i64>), (u64, u64)> = HashMap::new();
        let mut publish = |agg: &mut PartitionAggregator| {
            for p in agg.publish() {
                for w in p.windows {
                    let presence = (w.concurrent_viewers, w.peak_concurrent_viewers);
                    published.insert((w.stream_id, w.window_start), presence);
                }
            }
        };
        for (position, (e, then_publish)) in (0..).zip(&events) {
            prop_assert_eq!(agg.apply(e, position), Outcome::Counted);
            if *then_publish {
                publish(&mut agg);
            }
        }
        publish(&mut agg);
        prop_assert_eq!(agg.take_late_peek(), 0);
        for stream_id in agg.stream_ids() {
            // Every presence event is in a window: their peaks together
            // are the stream's.
            let highest = agg.windows(stream_id).unwrap().iter().map(|w| w.peak_concurrent_viewers).max();
            prop_assert_eq!(highest, Some(agg.rollup(stream_id).unwrap().peak_concurrent_viewers));
            for w in agg.windows(stream_id).unwrap() {
                let start = w.window_start.unwrap();
                let expected = presence_by_event_time(&events, stream_id, start, start + MIN);
                let key = (stream_id.to_string(), w.window_start);
                prop_assert_eq!((w.concurrent_viewers, w.peak_concurrent_viewers), expected, "window {:?}", key);
                prop_assert_eq!(published.get(&key), Some(&expected), "published {:?}", key);
            }
        }
    }

    #[test]
    fn window_figures_do_not_depend_on_arrival_order(
        (original, shuffled) in spread().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let (_, a) = apply_all(&original);
        let (_, b) = apply_all(&shuffled);
        prop_assert_eq!(a, b);
    }
}

#[test]
fn an_ended_stream_gives_back_its_live_state_and_then_its_windows() {
    let mut f = Feed::new();
    for v in 0..20 {
        let _ = f.send(&format!("u{v}"), T0 + v * 1_000, Action::View);
        let _ = f.send(&format!("u{v}"), T0 + MIN + v * 1_000, Action::Like);
    }
    let _ = f.agg.publish();
    let live = f.agg.state_bytes();
    assert!(live.presence > 0 && live.duplicate_filter > 0 && live.windows > 0);
    assert_eq!(live.total(), f.agg.state_bytes_estimate());
    // Idle past the timeout: finalised; per-viewer and per-event state freed.
    f.agg.advance_watermark(T0 + 40 * MIN);
    assert!(f.agg.publish()[0].rollup.is_final);
    let ended = f.agg.state_bytes();
    assert_eq!((ended.presence, ended.duplicate_filter), (0, 0));
    assert!(ended.windows > 0, "windows stay for corrections");
    // Past window retention: the windows' storage is freed too, not kept empty.
    f.agg.advance_watermark(T0 + 3 * 3_600_000);
    let _ = f.agg.publish();
    let expired = f.agg.state_bytes();
    assert_eq!(expired.windows, 0);
    assert_eq!(expired.products, live.products);
    assert_eq!(f.rollup().views, 20, "the figures stay");
}

#[test]
fn a_windows_presence_counts_the_viewers_at_its_end_by_event_time() {
    // In time order. u2 arrives two seconds before the first window ends:
    // the watermark (5 s behind) has not passed that view when the window's
    // last event comes, yet u2 is in the room at the window's end.
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 10_000, Action::View);
    let _ = f.send("u2", T0 + 58_000, Action::View);
    let _ = f.send("u3", T0 + 59_000, Action::Like);
    let _ = f.send("u1", T0 + 61_000, Action::Leave);
    let _ = f.send("u3", T0 + 62_000, Action::View);
    let _ = f.send("u3", T0 + 63_000, Action::Leave);
    let _ = f.send("u4", T0 + 2 * MIN + 1_000, Action::Like);
    // The third window has no presence event: it opens with the one viewer
    // left, u2.
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(2, 2), (1, 2), (1, 1)]
    );
    // Published so, and the same once every event has settled.
    let published = windows_of(&f.agg.publish(), "live-1");
    assert_eq!(presence(&published), [(2, 2), (1, 2), (1, 1)]);
    f.agg.advance_watermark(T0 + 3 * MIN);
    let _ = f.send("u4", T0 + 3 * MIN + 1_000, Action::View);
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(2, 2), (1, 2), (1, 1), (2, 2)]
    );
}

#[test]
fn a_window_opened_behind_settled_presence_starts_from_the_viewers_at_its_start() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + MIN + 10_000, Action::View);
    let _ = f.send("u2", T0 + 3 * MIN + 10_000, Action::View);
    let _ = f.send("u3", T0 + 4 * MIN + 10_000, Action::Like);
    // The watermark has passed u1 and u2: this view settles them.
    let _ = f.send("u4", T0 + 5 * MIN + 10_000, Action::View);
    // Late, behind the settled presence: a like before the stream's first
    // viewer came, and one in the gap between u1's and u2's windows.
    let _ = f.send("u3", T0 + 30_000, Action::Like);
    let _ = f.send("u3", T0 + 2 * MIN + 30_000, Action::Like);
    let windows = f.agg.windows("live-1").unwrap();
    let starts: Vec<Option<i64>> = windows.iter().map(|w| w.window_start).collect();
    let expected: Vec<Option<i64>> = (0..6).map(|m| Some(T0 + m * MIN)).collect();
    assert_eq!(starts, expected);
    assert_eq!(
        presence(&windows),
        [(0, 0), (1, 1), (1, 1), (2, 2), (2, 2), (3, 3)]
    );
}

#[test]
fn a_view_later_than_the_lateness_moves_the_windows_settled_after_it() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 10_000, Action::View);
    let _ = f.send("u2", T0 + 2 * MIN + 10_000, Action::View);
    let _ = f.send("u3", T0 + 3 * MIN + 10_000, Action::Like);
    // Behind the watermark, with u1's and u2's views still waiting: all
    // three settle in event-time order.
    let _ = f.send("u2", T0 + 2 * MIN + 40_000, Action::Leave);
    let _ = f.send("u4", T0 + 4 * MIN + 10_000, Action::Like);
    // No event in the second minute: no window there.
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(1, 1), (1, 2), (1, 1), (1, 1)]
    );
    let _ = f.agg.publish();
    // u5 came at 0:30 and never left; the view arrives 3.5 minutes late.
    // From 0:30 on, every count is one higher: u1, u2 and u5 were in the
    // room together from 2:10 to 2:40.
    let _ = f.send("u5", T0 + 30_000, Action::View);
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(2, 2), (2, 3), (2, 2), (2, 2)]
    );
    let r = f.rollup();
    assert_eq!((r.concurrent_viewers, r.peak_concurrent_viewers), (2, 3));
    let republished = windows_of(&f.agg.publish(), "live-1");
    assert_eq!(
        republished.len(),
        4,
        "every window it moved is published again"
    );
}

#[test]
fn an_earlier_windows_view_arriving_later_republishes_the_later_window() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 59_000, Action::Like);
    let _ = f.send("u1", T0 + 61_000, Action::Like);
    let first = windows_of(&f.agg.publish(), "live-1");
    assert_eq!(first.len(), 2);
    assert_eq!(first[1].concurrent_viewers, 0);
    // A view in the first window, within the allowed lateness: the second
    // window opens with that viewer in the room, so it changes too.
    let _ = f.send("u2", T0 + 58_000, Action::View);
    let again = windows_of(&f.agg.publish(), "live-1");
    let presence: Vec<(Option<i64>, u64, u64)> = again
        .iter()
        .map(|w| (w.window_start, w.concurrent_viewers, w.revision))
        .collect();
    assert_eq!(presence, [(Some(T0), 1, 2), (Some(T0 + MIN), 1, 2)]);
}

#[test]
fn a_late_event_opens_a_window_between_retained_ones() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 10, Action::View);
    let _ = f.send("u2", T0 + 2 * MIN + 10, Action::View);
    let _ = f.send("u3", T0 + 4 * MIN + 10, Action::View);
    // Late, but within retention: lands in its own window, between the others.
    let _ = f.send("u4", T0 + 3 * MIN + 10, Action::View);
    let _ = f.send("u5", T0 + MIN + 10, Action::View);
    let starts: Vec<Option<i64>> = f
        .agg
        .windows("live-1")
        .unwrap()
        .iter()
        .map(|w| w.window_start)
        .collect();
    let expected: Vec<Option<i64>> = (0..5).map(|m| Some(T0 + m * MIN)).collect();
    assert_eq!(starts, expected);
    assert!(f
        .agg
        .windows("live-1")
        .unwrap()
        .iter()
        .all(|w| w.views == 1 && w.unique_viewers == 1));
}

/// A crowd of 70 in the seconds before `T0 + MIN`, gone before it ends, and
/// 64 others from `T0 + MIN + 500`: enough waiting presence events for a
/// busy stream's projection, which plays the crowd too.
fn crowd_then_newcomers(config: AggregatorConfig) -> Feed {
    let mut f = Feed::with(config);
    for i in 0..70 {
        let _ = f.send(&format!("c{i}"), T0 + MIN - 4_000 + i, Action::View);
    }
    for i in 0..70 {
        let _ = f.send(&format!("c{i}"), T0 + MIN - 3_000 + i, Action::Leave);
    }
    for i in 0..64 {
        let _ = f.send(&format!("n{i}"), T0 + MIN + 500 + i, Action::View);
    }
    let _ = f.agg.publish();
    f
}

#[test]
fn a_busy_streams_window_does_not_take_the_peak_of_the_window_before() {
    let mut f = crowd_then_newcomers(AggregatorConfig::default());
    // The crowd settles; the newcomers still wait. A leave of a viewer who
    // never came changes no count but makes the window dirty.
    let _ = f.send("u1", T0 + MIN + 3_000, Action::Like);
    let _ = f.send("nobody", T0 + MIN + 600, Action::Leave);
    let published = windows_of(&f.agg.publish(), "live-1");
    let second: Vec<(u64, u64)> = presence(&published[published.len() - 1..]);
    assert_eq!(second, [(64, 64)], "the crowd was gone before the window");
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(0, 70), (64, 64)]
    );
}

#[test]
fn a_busy_streams_window_crossed_into_does_not_take_the_peak_before_it() {
    // A minute of lateness: the watermark stays in the first window.
    let mut f = crowd_then_newcomers(AggregatorConfig {
        allowed_lateness_ms: 65_000,
        ..AggregatorConfig::default()
    });
    let _ = f.send("u1", T0 + MIN + 700, Action::Like);
    let _ = f.send("nobody", T0 + 2 * MIN + 3_000, Action::Leave);
    let _ = f.send("nobody", T0 + MIN + 800, Action::Leave);
    let published = windows_of(&f.agg.publish(), "live-1");
    let second = published
        .iter()
        .rev()
        .find(|w| w.window_start == Some(T0 + MIN))
        .expect("the second window is published");
    assert_eq!(
        (second.concurrent_viewers, second.peak_concurrent_viewers),
        (64, 64)
    );
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(0, 70), (64, 64), (64, 64)]
    );
}

#[test]
fn a_view_later_than_the_lateness_raises_its_windows_peak_when_it_came_before_it() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 10_000, Action::View);
    let _ = f.send("u2", T0 + 20_000, Action::View);
    let _ = f.send("u3", T0 + 30_000, Action::View);
    let _ = f.send("u3", T0 + 40_000, Action::Leave);
    let _ = f.send("u2", T0 + 50_000, Action::Leave);
    // A view that settles the presence events before 1:25.
    let _ = f.send("u4", T0 + MIN + 30_000, Action::View);
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(1, 3), (2, 2)]
    );
    // When a window was at its peak survives a restart.
    let bytes = f.agg.checkpoint("live-1").unwrap().to_bytes();
    let mut restored = PartitionAggregator::new(AggregatorConfig::default());
    restored.restore("live-1", StreamCheckpoint::from_bytes(&bytes).unwrap());
    // u5 came at 0:05 and stayed; the view arrives 85 s late. From 0:05 on
    // every count is one higher: four in the room from 0:30 to 0:40.
    let u5 = event("late", "live-1", "u5", T0 + 5_000, Action::View);
    let _ = f.send_event(&u5);
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(2, 4), (3, 3)]
    );
    let _ = restored.apply(&u5, 100);
    assert_eq!(restored.windows("live-1"), f.agg.windows("live-1"));
    assert_eq!(f.rollup().peak_concurrent_viewers, 4);
    // One that came at 0:45, after the peak, leaves it as it was.
    let _ = f.send("u6", T0 + 45_000, Action::View);
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(3, 4), (4, 4)]
    );
}

#[test]
fn a_leave_later_than_the_lateness_lowers_its_windows_peak_when_it_came_before_it() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 10_000, Action::View);
    let _ = f.send("u2", T0 + 15_000, Action::View);
    let _ = f.send("u3", T0 + 30_000, Action::View);
    let _ = f.send("u3", T0 + 40_000, Action::Leave);
    let _ = f.send("u4", T0 + MIN + 30_000, Action::View);
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(2, 3), (3, 3)]
    );
    // u1 left at 0:20; the leave arrives 75 s late. Never more than two
    // in the room after all.
    let _ = f.send("u1", T0 + 20_000, Action::Leave);
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(1, 2), (2, 2)]
    );
    // u2 left at 0:35: the peak of two, from 0:15 to 0:20, stands.
    let _ = f.send("u2", T0 + 35_000, Action::Leave);
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(0, 2), (1, 1)]
    );
}

#[test]
fn a_presence_event_later_than_the_lateness_moves_counts_until_its_viewers_next_one() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 10_000, Action::View);
    let _ = f.send("u2", T0 + 20_000, Action::View);
    let _ = f.send("u2", T0 + 30_000, Action::Leave);
    let _ = f.send("u3", T0 + 40_000, Action::View);
    let _ = f.send("u3", T0 + 50_000, Action::Leave);
    // u5's leave at 1:40 comes in time; their view does not.
    let _ = f.send("u5", T0 + MIN + 40_000, Action::Leave);
    // A view that settles the presence events before 2:25.
    let _ = f.send("u4", T0 + 2 * MIN + 30_000, Action::View);
    let windows = |f: &Feed| presence(&f.agg.windows("live-1").unwrap());
    assert_eq!(windows(&f), [(1, 2), (1, 1), (2, 2)]);
    // u3 came at 0:15, not 0:40; the view arrives two minutes late. Three
    // in the room from 0:20 to 0:30.
    let _ = f.send("u3", T0 + 15_000, Action::View);
    assert_eq!(windows(&f), [(1, 3), (1, 1), (2, 2)]);
    assert_eq!(f.rollup().peak_concurrent_viewers, 3);
    // The settled events a late one is played with survive a restart.
    let _ = f.agg.publish();
    let mut changelog = Changelog::default();
    changelog.write(f.agg.checkpoints());
    let mut restored = changelog.restore(AggregatorConfig::default());
    // u5 came at 0:55 and stayed until their leave at 1:40: two at the end
    // of the first minute, and two from the start of the second.
    let u5 = event("late-u5", "live-1", "u5", T0 + 55_000, Action::View);
    let _ = f.send_event(&u5);
    assert_eq!(windows(&f), [(2, 3), (1, 2), (2, 2)]);
    // And u3 left at 0:18, before coming back at 0:40: never more than two
    // in the room after all, the stream's peak included.
    let u3 = event("late-u3", "live-1", "u3", T0 + 18_000, Action::Leave);
    let _ = f.send_event(&u3);
    assert_eq!(windows(&f), [(2, 2), (1, 2), (2, 2)]);
    assert_eq!(f.rollup().peak_concurrent_viewers, 2);
    for (position, e) in (100..).zip([&u5, &u3]) {
        let _ = restored.apply(e, position);
    }
    assert_eq!(restored.windows("live-1"), f.agg.windows("live-1"));
    assert_eq!(restored.rollup("live-1"), f.agg.rollup("live-1"));
}

#[test]
fn presence_events_behind_every_retained_window_still_raise_the_peak_as_defined() {
    // Another stream's event two hours on moves the watermark: every event
    // of live-1 after it is later than window retention, and opens no
    // window. Until a publication expires them, live-1 keeps its settled
    // presence events, as `replay` does for a whole file.
    let ahead = |f: &mut Feed| {
        let e = event("ahead", "live-2", "z", T0 + 120 * MIN, Action::Like);
        let _ = f.send_event(&e);
    };
    // Three viewers come at 0:02, 0:01 and 0:00 and stay: three at once
    // from 0:02, whatever the order they arrive in.
    let mut f = Feed::new();
    ahead(&mut f);
    let _ = f.send("v1", T0 + 2_000, Action::View);
    let _ = f.send("v2", T0 + 1_000, Action::View);
    let _ = f.send("v3", T0, Action::View);
    assert_eq!(f.agg.windows("live-1").unwrap(), []);
    assert_eq!(f.rollup().peak_concurrent_viewers, 3);
    // Ended (idle for longer than the idle timeout), it keeps its peak.
    let ended = f.agg.publish();
    let last = ended
        .iter()
        .find(|p| p.rollup.stream_id == "live-1")
        .unwrap();
    assert!(last.rollup.is_final);
    assert_eq!(last.rollup.peak_concurrent_viewers, 3);
    // A viewer whose leave at 3:32 arrives before their view at 0:00: in
    // the room from 0:00 to 3:32.
    let mut f = Feed::new();
    ahead(&mut f);
    let _ = f.send("v1", T0 + 3 * MIN + 32_000, Action::Leave);
    let _ = f.send("v1", T0, Action::View);
    assert_eq!(f.rollup().peak_concurrent_viewers, 1);
    // And fall: v1 from 0:00, v2 from 5:00, v3 from 6:00 to 7:00, and v1's
    // leave at 1:40 comes last. Never three in the room at once, only two
    // (6:00 to 7:00); also in a state restored from a checkpoint taken
    // before the leave.
    let mut f = Feed::new();
    ahead(&mut f);
    let _ = f.send("v1", T0, Action::View);
    let _ = f.send("v2", T0 + 5 * MIN, Action::View);
    let _ = f.send("v3", T0 + 6 * MIN, Action::View);
    let _ = f.send("v3", T0 + 7 * MIN, Action::Leave);
    assert_eq!(f.rollup().peak_concurrent_viewers, 3);
    let mut restored = PartitionAggregator::new(AggregatorConfig::default());
    for stream_id in ["live-1", "live-2"] {
        let bytes = f.agg.checkpoint(stream_id).unwrap().to_bytes();
        restored.restore(stream_id, StreamCheckpoint::from_bytes(&bytes).unwrap());
    }
    let leave = event("leave", "live-1", "v1", T0 + MIN + 40_000, Action::Leave);
    let _ = f.send_event(&leave);
    assert_eq!(f.rollup().peak_concurrent_viewers, 2);
    let _ = restored.apply(&leave, 100);
    assert_eq!(restored.rollup("live-1"), f.agg.rollup("live-1"));
}

#[test]
fn the_history_of_settled_presence_is_kept_for_window_retention_only() {
    let config = AggregatorConfig {
        window_retention_ms: 5 * MIN,
        ..AggregatorConfig::default()
    };
    let mut f = Feed::with(config);
    // A viewer who comes and goes every ten seconds for two hours.
    let mut presence_bytes = Vec::new();
    for i in 0..720 {
        let action = if i % 2 == 0 {
            Action::View
        } else {
            Action::Leave
        };
        let _ = f.send("u1", T0 + i * 10_000, action);
        if i % 120 == 119 {
            let _ = f.agg.publish();
            presence_bytes.push(f.agg.state_bytes().presence);
        }
    }
    // What the first 20 minutes left is what each later 20 minutes leave:
    // retention (and a window) of events, not two hours of them.
    assert!(
        presence_bytes.iter().all(|&b| b <= presence_bytes[0]),
        "{presence_bytes:?}"
    );
}

/// Up to 60 views and leaves of eight viewers of `live-1` over three
/// minutes, each marked with probability `marked` (to arrive late).
fn presence_events(marked: f64) -> impl Strategy<Value = Vec<(Event<'static>, bool)>> {
    presence_events_of(marked, 8, 1..60, 1)
}

/// Views and leaves of `viewers` viewers of `live-1`, as many as `count`
/// says, at multiples of `step_ms` over three minutes, each marked with
/// probability `marked` (to arrive late).
fn presence_events_of(
    marked: f64,
    viewers: u8,
    count: std::ops::Range<usize>,
    step_ms: i64,
) -> impl Strategy<Value = Vec<(Event<'static>, bool)>> {
    let one = (
        0..viewers,
        0..3 * MIN / step_ms,
        any::<bool>(),
        prop::bool::weighted(marked),
    );
    prop::collection::vec(one, count).prop_map(move |specs| {
        (0..)
            .zip(&specs)
            .map(|(i, &(viewer, step, view, mark))| {
                let offset = step * step_ms;
                let action = if view { Action::View } else { Action::Leave };
                let e = event(
                    &format!("e{i}"),
                    "live-1",
                    &format!("u{viewer}"),
                    T0 + offset,
                    action,
                );
                (e, mark)
            })
            .collect::<Vec<_>>()
    })
}

/// Presence events of one stream over three minutes, of eight viewers who
/// come and go: most arrive in time order, the others (any of them, views
/// and leaves alike) later than the lateness, in any order, after an event
/// that settles the rest. Each with whether it is one of the late ones.
fn some_late() -> impl Strategy<Value = Vec<(Event<'static>, bool)>> {
    late_among(presence_events(0.2))
}

/// [`some_late`] for a busy stream: 300 to 900 events of 40 viewers at
/// 100 ms steps (instants often hold several), so that late events play
/// the history in blocks (`stream/blocks.rs`), and 5 % of them late.
fn busy_some_late() -> impl Strategy<Value = Vec<(Event<'static>, bool)>> {
    late_among(presence_events_of(0.05, 40, 300..900, 100))
}

/// Events, each with whether it is marked to arrive late.
type Marked = Vec<(Event<'static>, bool)>;

/// `events` split: those in time order, and the marked ones in any order.
fn in_time_and_late(
    events: impl Strategy<Value = Marked>,
) -> impl Strategy<Value = (Marked, Marked)> {
    events
        .prop_map(|mut events| {
            events.sort_by_key(|(e, _)| e.ts);
            events
        })
        .prop_flat_map(|events| {
            let (late, in_time): (Vec<_>, Vec<_>) = events.into_iter().partition(|(_, l)| *l);
            (Just(in_time), Just(late).prop_shuffle())
        })
}

/// `events` in time order, but the marked ones, which come in any order
/// after an event that settles the rest.
fn late_among(
    events: impl Strategy<Value = Vec<(Event<'static>, bool)>>,
) -> impl Strategy<Value = Vec<(Event<'static>, bool)>> {
    in_time_and_late(events).prop_map(|(mut in_time, late)| {
        // A view after the three minutes settles every event before it.
        let closer = event("closer", "live-1", "closer", T0 + 4 * MIN, Action::View);
        in_time.push((closer, false));
        in_time.extend(late);
        in_time
    })
}

proptest! {
    #[test]
    fn presence_events_later_than_the_lateness_move_presence_as_defined(
        events in some_late()
    ) {
        late_presence_as_defined(&events)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn late_presence_events_of_a_busy_stream_move_presence_as_defined(
        events in busy_some_late()
    ) {
        late_presence_as_defined(&events)?;
    }
}

/// Applies `events`, publishing after each late one, and compares each
/// window's and the stream's (concurrent, peak) with the definition.
fn late_presence_as_defined(events: &[(Event<'static>, bool)]) -> Result<(), TestCaseError> {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    for (position, (e, late)) in (0..).zip(events) {
        prop_assert_eq!(agg.apply(e, position), Outcome::Counted);
        if *late {
            let _ = agg.publish();
        }
    }
    let windows = agg.windows("live-1").unwrap();
    for w in &windows {
        let start = w.window_start.unwrap();
        let expected = presence_by_event_time(events, "live-1", start, start + MIN);
        prop_assert_eq!(
            (w.concurrent_viewers, w.peak_concurrent_viewers),
            expected,
            "window at +{}",
            start - T0
        );
    }
    let total = agg.rollup("live-1").unwrap();
    let expected = presence_by_event_time(events, "live-1", T0, T0 + 5 * MIN);
    prop_assert_eq!(
        (total.concurrent_viewers, total.peak_concurrent_viewers),
        expected
    );
    Ok(())
}

/// Presence events of one stream over three minutes, as [`some_late`]'s,
/// of which some arrive in time order and the others, in any order, after
/// another stream's event two hours on: later than window retention, so
/// they open no window.
fn some_beyond_retention() -> impl Strategy<Value = Vec<(Event<'static>, bool)>> {
    presence_events(0.5)
        .prop_flat_map(|events| {
            let (beyond, in_time): (Vec<_>, Vec<_>) = events.into_iter().partition(|(_, b)| *b);
            (Just(in_time), Just(beyond).prop_shuffle())
        })
        .prop_map(|(mut in_time, beyond)| {
            in_time.sort_by_key(|(e, _)| e.ts);
            let ahead = event("ahead", "live-2", "z", T0 + 120 * MIN, Action::Like);
            in_time.push((ahead, false));
            in_time.extend(beyond);
            in_time
        })
}

proptest! {
    #[test]
    fn presence_events_behind_every_retained_window_move_the_peak_as_defined(
        events in some_beyond_retention()
    ) {
        // As `replay` does: no publication until the end, so the stream
        // keeps its whole history.
        let mut agg = PartitionAggregator::new(AggregatorConfig::default());
        for (position, (e, _)) in (0..).zip(&events) {
            prop_assert_eq!(agg.apply(e, position), Outcome::Counted);
        }
        let total = agg.rollup("live-1").unwrap();
        let expected = presence_by_event_time(&events, "live-1", T0, T0 + 5 * MIN);
        prop_assert_eq!((total.concurrent_viewers, total.peak_concurrent_viewers), expected);
    }
}

#[test]
fn a_leave_behind_the_watermark_at_the_settled_instant_undoes_the_peak_there() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 10_000, Action::View);
    let _ = f.send("u2", T0 + 20_000, Action::View);
    // Leaves of viewers never seen: the watermark reaches 0:26, both views
    // settle (settled presence reaches 0:20); these two wait and change no
    // count.
    let _ = f.send("u3", T0 + 30_000, Action::Leave);
    let _ = f.send("u4", T0 + 31_000, Action::Leave);
    // u2 left at 0:20 too: a leave wins the tie, so u2 was never in the room.
    let _ = f.send("u2", T0 + 20_000, Action::Leave);
    assert_eq!(presence(&f.agg.windows("live-1").unwrap()), [(1, 1)]);
    let _ = f.send("u5", T0 + 2 * MIN, Action::Leave);
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(1, 1), (1, 1)]
    );
}

#[test]
fn a_handover_completed_behind_the_watermark_at_the_settled_instant() {
    let mut f = Feed::new();
    let _ = f.send("u1", T0 + 10_000, Action::View);
    let _ = f.send("u2", T0 + 20_000, Action::View);
    let _ = f.send("u3", T0 + 30_000, Action::Leave);
    let _ = f.send("u4", T0 + 31_000, Action::Leave);
    // u1 left at 0:20 as u2 came: a handover, never two in the room.
    let _ = f.send("u1", T0 + 20_000, Action::Leave);
    assert_eq!(presence(&f.agg.windows("live-1").unwrap()), [(1, 1)]);
    // Then a view 17 s late, at 0:15: two in the room from 0:15 to 0:20.
    let _ = f.send("u6", T0 + 32_000, Action::Leave);
    let _ = f.send("u7", T0 + 15_000, Action::View);
    assert_eq!(presence(&f.agg.windows("live-1").unwrap()), [(2, 2)]);
}

#[test]
fn a_leave_at_the_settled_instant_keeps_the_count_the_window_opened_with() {
    // Another stream's event puts the watermark minutes ahead: each of
    // `live-1`'s presence events settles as it arrives.
    let w = T0 + 10 * MIN;
    let mut f = Feed::new();
    let _ = f
        .agg
        .apply(&event("ahead", "live-2", "z", w + 4 * MIN, Action::Like), 0);
    let _ = f.send("u1", w - 40_000, Action::View);
    // u1 is present from before the next window's start to 0:20 into it,
    // where u2 comes and goes at the same instant (a leave wins the tie).
    let _ = f.send("u2", w + 20_000, Action::View);
    let _ = f.send("u2", w + 20_000, Action::Leave);
    let _ = f.send("u1", w + 20_000, Action::Leave);
    // The second window opened with u1 present: its peak is 1.
    assert_eq!(
        presence(&f.agg.windows("live-1").unwrap()),
        [(1, 1), (0, 1)]
    );
}

/// `events`, all behind a watermark another stream's event put minutes
/// ahead, so that each settles as it arrives: most in time order, the
/// marked ones in any order after them.
fn behind_another_streams_watermark(
    events: impl Strategy<Value = Vec<(Event<'static>, bool)>>,
) -> impl Strategy<Value = Vec<(Event<'static>, bool)>> {
    in_time_and_late(events).prop_map(|(in_time, late)| {
        let ahead = event("ahead", "live-2", "z", T0 + 10 * MIN, Action::Like);
        let mut events = vec![(ahead, false)];
        events.extend(in_time);
        events.extend(late);
        events
    })
}

proptest! {
    #[test]
    fn presence_behind_another_streams_watermark_moves_presence_as_defined(
        // Eight viewers at 10 s steps: instants often hold several.
        events in behind_another_streams_watermark(presence_events_of(0.2, 8, 1..60, 10_000))
    ) {
        late_presence_as_defined(&events)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn a_busy_streams_presence_behind_another_streams_watermark_moves_presence_as_defined(
        // As `busy_some_late`'s: histories long enough to play in blocks.
        events in behind_another_streams_watermark(presence_events_of(0.05, 40, 300..900, 100))
    ) {
        late_presence_as_defined(&events)?;
    }
}

/// A stream's (concurrent, peak), and its windows' (start, concurrent, peak).
type StreamAndWindows = ((u64, u64), Vec<(i64, u64, u64)>);

/// Applies `events` of stream `s`, publishing after each as `run` may, and
/// gives the stream's presence and its windows' (their start from `t`).
fn presence_published_after_each(
    events: &[(&str, i64, Action<'static>)],
    t: i64,
) -> StreamAndWindows {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    for (position, (i, &(viewer, ts, ref action))) in (0..).zip(events.iter().enumerate()) {
        let e = event(&format!("e{i}"), "s", viewer, ts, action.clone());
        assert_eq!(agg.apply(&e, position), Outcome::Counted);
        let _ = agg.publish();
    }
    let total = agg.rollup("s").unwrap();
    let windows = agg
        .windows("s")
        .unwrap()
        .iter()
        .map(|w| {
            let start = w.window_start.unwrap() - t;
            (start, w.concurrent_viewers, w.peak_concurrent_viewers)
        })
        .collect();
    (
        (total.concurrent_viewers, total.peak_concurrent_viewers),
        windows,
    )
}

#[test]
fn a_viewer_who_left_is_remembered_while_an_earlier_view_can_still_land_in_a_window() {
    let t = T0 + 80 * MIN;
    let (total, windows) = presence_published_after_each(
        &[
            ("v1", t + 1_000, Action::Leave),
            ("x", t + 30_000, Action::Like),
            // The watermark passes 1 h after v1's leave; the window of 0:00
            // is retained for a minute more.
            ("v2", t + 60 * MIN + 35_000, Action::View),
            // In that minute v1's view before their leave arrives: they
            // were in the room from 0:00.5 to 0:01, not since.
            ("v1", t + 500, Action::View),
        ],
        t,
    );
    assert_eq!(total, (1, 1));
    assert_eq!(windows, [(0, 0, 1), (60 * MIN, 1, 1)]);
}

#[test]
fn a_window_opened_late_after_the_windows_before_it_expired_starts_from_the_viewers_then() {
    let t = T0 + 80 * MIN;
    let (total, windows) = presence_published_after_each(
        &[
            ("x", t, Action::Like),
            ("x", t + 61 * MIN + 40_000, Action::Like),
            // The window of 0:00 expires; v1 arrives at 1:01:30.
            ("v1", t + 61 * MIN + 30_000, Action::View),
            // A late like opens the window of 1:00, before v1 came.
            ("x", t + 60 * MIN + 30_000, Action::Like),
        ],
        t,
    );
    assert_eq!(total, (1, 1));
    assert_eq!(windows, [(60 * MIN, 0, 0), (61 * MIN, 1, 1)]);
}

#[test]
fn a_window_opened_late_before_the_first_retained_one_starts_from_the_viewers_then() {
    let t = T0 + 80 * MIN;
    let (total, windows) = presence_published_after_each(
        &[
            ("x", t + 61 * MIN + 40_000, Action::Like),
            ("v1", t + 3 * MIN + 20_000, Action::View),
            // Too late for any window: counted, and opens none.
            ("v2", t + 10_000, Action::View),
            // Opens the window of 0:02, before v1 came and after v2 did.
            ("x", t + 2 * MIN + 30_000, Action::Like),
        ],
        t,
    );
    assert_eq!(total, (2, 2));
    assert_eq!(
        windows,
        [(2 * MIN, 1, 1), (3 * MIN, 2, 2), (61 * MIN, 2, 2)]
    );
}
