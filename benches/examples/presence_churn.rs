//! One busy stream's presence with churn, for callgrind's repeatable
//! counts: an audience of 100, and every millisecond for two minutes a new
//! viewer comes and another leaves at the same instant, in time order
//! (239,900 events). With the argument `behind`, another stream's event
//! first puts the partition's watermark minutes ahead, so each presence
//! event settles as it arrives, the view before the leave of its instant:
//! every leave then undoes the peak the view just reached at that instant.
//!
//! ```text
//! cargo build --release -p livetally-benches --example presence_churn
//! valgrind --tool=callgrind --toggle-collect='*measured*' \
//!     target/release/examples/presence_churn behind
//! ```

use std::borrow::Cow;
use std::hint::black_box;

use livetally_aggregator::{Action, AggregatorConfig, Event, PartitionAggregator};

#[inline(never)]
fn measured(aggregator: &mut PartitionAggregator, events: &[Event<'static>]) {
    for (position, event) in (0..).zip(events) {
        let _ = black_box(aggregator.apply(event, position));
    }
}

fn presence(n: usize, viewer: u64, ts: i64, action: Action<'static>) -> Event<'static> {
    Event {
        event_id: Cow::Owned(format!("e{n}")),
        stream_id: Cow::Borrowed("busy"),
        viewer_id: Cow::Owned(format!("u{viewer}")),
        ts,
        seller_id: None,
        action,
    }
}

fn main() {
    const T0: i64 = 1_764_115_200_000;
    const AUDIENCE: u64 = 100;
    let mut events = Vec::new();
    for (viewer, ms) in (0..).zip(0..120_000) {
        events.push(presence(events.len(), viewer, T0 + ms, Action::View));
        if viewer >= AUDIENCE {
            let left = viewer - AUDIENCE;
            events.push(presence(events.len(), left, T0 + ms, Action::Leave));
        }
    }
    let mut aggregator = PartitionAggregator::new(AggregatorConfig::default());
    let behind = std::env::args().nth(1).as_deref() == Some("behind");
    if behind {
        let ahead = Event {
            event_id: Cow::Borrowed("ahead"),
            stream_id: Cow::Borrowed("other"),
            viewer_id: Cow::Borrowed("z"),
            ts: T0 + 10 * 60_000,
            seller_id: None,
            action: Action::Like,
        };
        let _ = aggregator.apply(&ahead, u64::MAX);
    }
    measured(&mut aggregator, &events);
    let rollup = aggregator.rollup("busy").expect("applied");
    eprintln!(
        "{} presence events{}: concurrent {}, peak {}",
        events.len(),
        if behind {
            ", each settled as it arrived"
        } else {
            ""
        },
        rollup.concurrent_viewers,
        rollup.peak_concurrent_viewers
    );
}
