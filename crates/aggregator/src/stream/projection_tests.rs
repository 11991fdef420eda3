//! A busy stream's [`Projection`] against the plain replay it stands in for.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

/// The settled presence played forward through every pending event, from
/// scratch, written out plainly: what [`StreamState::presence_now`] must
/// return whatever its projection holds.
fn replayed(state: &StreamState) -> (u64, u64) {
    replayed_span(
        state,
        EventTime::MIN,
        EventTime::MAX,
        Some(state.settled_peak),
    )
}

/// The settled presence played forward through the pending events before
/// `end`, from scratch, as [`StreamState::play_pending`] must give it: the count at `start` (before
/// the first pending event from `start` on) and after each event from
/// `start` on count in the peak, with `settled`.
fn replayed_span(
    state: &StreamState,
    start: EventTime,
    end: EventTime,
    settled: Option<u64>,
) -> (u64, u64) {
    let live = state.live();
    let mut latest: HashMap<u64, Viewer> = HashMap::new();
    let mut concurrent = live.viewers.concurrent;
    let mut peak = settled;
    let mut opened = false;
    for event in live.pending.events.iter().filter(|e| e.ts < end) {
        if event.ts >= start && !opened {
            opened = true;
            peak = Some(peak.map_or(concurrent, |p| p.max(concurrent)));
        }
        let before = latest
            .get(&event.viewer)
            .or_else(|| live.viewers.by_hash.get(event.viewer))
            .copied();
        let now = Viewer::new(event.ts, event.view());
        if before.is_some_and(|v| now <= v) {
            continue;
        }
        let was_present = before.is_some_and(Viewer::present);
        if event.view() && !was_present {
            concurrent += 1;
        } else if !event.view() && was_present {
            concurrent -= 1;
        }
        latest.insert(event.viewer, now);
        if opened {
            peak = Some(peak.map_or(concurrent, |p| p.max(concurrent)));
        }
    }
    let peak = peak.map_or(concurrent, |p| if opened { p } else { p.max(concurrent) });
    (concurrent, peak)
}

/// The windows of the projection's crossings and the spans checked, ms:
/// about the span of the pending events, so that most projections cross
/// one window start.
const WINDOW: i64 = 6_000;

/// The clock the projection records window starts by: [`WINDOW`] long.
fn windows() -> Clock {
    Clock {
        window_ms: WINDOW,
        ..clock(None)
    }
}

fn clock(watermark: Option<EventTime>) -> Clock {
    Clock {
        window_ms: 60_000,
        retention_ms: 3_600_000,
        dedup_horizon_ms: 600_000,
        watermark,
    }
}

/// One step of a busy stream's life.
#[derive(Clone, Debug)]
enum Step {
    /// A presence event `back` ms before the newest so far (negative: after).
    Presence { viewer: u64, back: i64, view: bool },
    /// A publication.
    Publish,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let presence = (0u64..80, any::<bool>(), 0u32..1_000).prop_map(|(viewer, view, roll)| {
        // Mostly a few ms apart and in order; some out of order by up to a
        // second (past the projection's lag), a few by more than the
        // lateness (settled at once), and now and then one well ahead, so
        // that the watermark passes every pending event at once.
        let back = match roll {
            0..=1 => -6_000,
            2..=799 => -3,
            800..=899 => i64::from(roll % 7),
            900..=979 => 100 * i64::from(roll % 10 + 1),
            // Just behind the watermark: newer than most viewers' settled
            // presence, so it often flips a viewer the projection played.
            980..=989 => 5_001,
            _ => 7_000,
        };
        // Far behind, a late event comes from a viewer not seen yet, so that
        // it changes the settled state (an older viewer's is newer than it).
        let viewer = if back == 7_000 {
            1_000 + viewer
        } else {
            viewer
        };
        Step::Presence { viewer, back, view }
    });
    prop::collection::vec(
        prop_oneof![30 => presence, 1 => Just(Step::Publish)],
        400..1_200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// At every publication, concurrent and peak viewers equal the plain
    /// replay of the settled state through every pending event, as events
    /// arrive in and out of order, settle, and come in too late.
    #[test]
    fn a_projection_gives_what_replaying_every_pending_event_gives(steps in steps()) {
        const LATENESS: i64 = 5_000;
        let mut state = StreamState::default();
        let mut newest: EventTime = 1_000_000;
        let mut projected = 0;
        // A busy start, so that a projection is built, then anything.
        let busy_start = (0..PROJECT_FROM as u64 + 50).map(|viewer| Step::Presence {
            viewer,
            back: -3,
            view: true,
        });
        for step in busy_start.chain([Step::Publish]).chain(steps) {
            match step {
                Step::Presence { viewer, back, view } => {
                    let ts = newest - back;
                    newest = newest.max(ts);
                    state.presence(viewer, ts, view, &clock(Some(newest - LATENESS)));
                }
                Step::Publish => {
                    state.project_presence(&windows());
                    projected += usize::from(state.live().pending.projection.is_some());
                    prop_assert_eq!(state.presence_now(), replayed(&state));
                    // The windows around the pending events: before, across
                    // and after the projection's last event, and the
                    // windows either side of the start it crossed.
                    let newest_window = newest - newest.rem_euclid(WINDOW);
                    for back in -1..8 {
                        let start = newest_window - back * WINDOW;
                        for settled in [None, Some(3)] {
                            prop_assert_eq!(
                                state.play_pending(start, start + WINDOW, settled),
                                replayed_span(&state, start, start + WINDOW, settled),
                                "window {} back", back
                            );
                        }
                    }
                }
            }
            // Between publications too: the projection must stay true as
            // events arrive and settle.
            prop_assert_eq!(state.presence_now(), replayed(&state));
        }
        // The stream is busy enough that its projection was used.
        prop_assert!(projected > 0, "no publication had a projection");
    }
}

/// A stream with few pending events keeps no projection: it costs a small
/// stream nothing.
#[test]
fn a_quiet_stream_keeps_no_projection() {
    let mut state = StreamState::default();
    for i in 0..(PROJECT_FROM as i64 - 1) {
        state.presence(i as u64, 1_000 + i, true, &clock(None));
    }
    state.project_presence(&windows());
    assert!(state.live().pending.projection.is_none());
    state.presence(9_999, 5_000, true, &clock(None));
    state.project_presence(&windows());
    let projection = state
        .live()
        .pending
        .projection
        .as_deref()
        .expect("busy now");
    // It played the events more than the lag older than the newest.
    assert!(projection.through.ts <= 5_000 - PROJECTION_LAG_MS);
    assert_eq!(state.presence_now(), replayed(&state));
}

/// A busy stream's projection that crossed a window start serves the
/// windows on both sides of it, as replaying every pending event would.
#[test]
fn a_projection_across_a_window_start_serves_both_windows() {
    let mut state = StreamState::default();
    // 800 presence events 5 ms apart from 2 s before a window start.
    let start = 6 * WINDOW;
    for i in 0..800 {
        let ts = start - 2_000 + 5 * i;
        let view = i % 3 != 2;
        state.presence((i % 150) as u64, ts, view, &clock(None));
    }
    state.project_presence(&windows());
    let projection = state.live().pending.projection.as_deref().expect("busy");
    assert!(
        matches!(projection.crossed, Crossed::One { start: s, .. } if s == start),
        "{:?}",
        projection.crossed
    );
    for settled in [None, Some(100)] {
        for window in [start - WINDOW, start] {
            assert_eq!(
                state.play_pending(window, window + WINDOW, settled),
                replayed_span(&state, window, window + WINDOW, settled),
                "window {window}"
            );
        }
    }
}
