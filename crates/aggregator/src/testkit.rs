//! Builders for test events, so each test reads as the story it tells.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::changelog::{self, Record};
use crate::event::{Action, Currency, Event, EventTime, OrderLine};
use crate::partition::{AggregatorConfig, IdSeeds, Outcome, PartitionAggregator};
use crate::rollup::{ProductRollup, StreamRollup};
use crate::stream::StreamCheckpoint;

pub(crate) const USD: Currency = Currency(*b"USD");
pub(crate) const EUR: Currency = Currency(*b"EUR");

fn s(text: &str) -> Cow<'static, str> {
    Cow::Owned(text.to_owned())
}

/// An event with every field spelled out.
pub(crate) fn event(
    event_id: &str,
    stream_id: &str,
    viewer_id: &str,
    ts: EventTime,
    action: Action<'static>,
) -> Event<'static> {
    Event {
        event_id: s(event_id),
        stream_id: s(stream_id),
        viewer_id: s(viewer_id),
        ts,
        seller_id: None,
        action,
    }
}

pub(crate) fn impression(product_id: &str) -> Action<'static> {
    Action::Impression {
        product_id: s(product_id),
    }
}

pub(crate) fn click(product_id: &str) -> Action<'static> {
    Action::Click {
        product_id: s(product_id),
    }
}

pub(crate) fn add_to_cart(product_id: &str) -> Action<'static> {
    Action::AddToCart {
        product_id: s(product_id),
    }
}

/// An order line in USD.
pub(crate) fn line(
    product_id: &str,
    order_id: &str,
    quantity: u32,
    unit_price: i64,
) -> OrderLine<'static> {
    OrderLine {
        product_id: s(product_id),
        order_id: s(order_id),
        quantity,
        unit_price,
        currency: USD,
    }
}

pub(crate) fn purchase(
    product_id: &str,
    order_id: &str,
    quantity: u32,
    unit_price: i64,
) -> Action<'static> {
    Action::Purchase(line(product_id, order_id, quantity, unit_price))
}

pub(crate) fn refund(
    product_id: &str,
    order_id: &str,
    quantity: u32,
    unit_price: i64,
) -> Action<'static> {
    Action::Refund(line(product_id, order_id, quantity, unit_price))
}

/// An aggregator whose streams' id seeds are the same in every test (and
/// in every aggregator of a test that compares two).
pub(crate) fn aggregator(config: AggregatorConfig) -> PartitionAggregator {
    PartitionAggregator::new(config).with_id_seeds(IdSeeds::Keyed(0x5eed))
}

/// A new aggregator with `events` applied at positions 0, 1, 2, …
pub(crate) fn applied(events: &[Event<'_>]) -> PartitionAggregator {
    applied_to(aggregator(AggregatorConfig::default()), events)
}

/// [`applied`], its ids hashed unseeded as before seeds: for tests that
/// write older formats.
pub(crate) fn applied_unseeded(events: &[Event<'_>]) -> PartitionAggregator {
    let agg = PartitionAggregator::new(AggregatorConfig::default());
    applied_to(agg.with_id_seeds(IdSeeds::Unseeded), events)
}

fn applied_to(mut agg: PartitionAggregator, events: &[Event<'_>]) -> PartitionAggregator {
    for (position, e) in (0..).zip(events) {
        let _ = agg.apply(e, position);
    }
    agg
}

/// An aggregator fed one stream (`"live-1"` unless told), with fresh event ids
/// and increasing positions, so tests only say what happened.
pub(crate) struct Feed {
    pub(crate) agg: PartitionAggregator,
    pub(crate) stream_id: String,
    pub(crate) next: u64,
}

impl Feed {
    pub(crate) fn new() -> Feed {
        Feed::with(AggregatorConfig::default())
    }

    pub(crate) fn with(config: AggregatorConfig) -> Feed {
        Feed {
            agg: aggregator(config),
            stream_id: "live-1".to_owned(),
            next: 0,
        }
    }

    /// Sends a new event by `viewer_id` at `ts`.
    pub(crate) fn send(
        &mut self,
        viewer_id: &str,
        ts: EventTime,
        action: Action<'static>,
    ) -> Outcome {
        let id = format!("e-{}", self.next);
        let e = event(&id, &self.stream_id.clone(), viewer_id, ts, action);
        self.send_event(&e)
    }

    /// Sends a given event at the next position.
    pub(crate) fn send_event(&mut self, e: &Event<'_>) -> Outcome {
        let position = self.next;
        self.next += 1;
        self.agg.apply(e, position)
    }

    pub(crate) fn rollup(&self) -> StreamRollup {
        self.agg.rollup(&self.stream_id).expect("stream exists")
    }

    pub(crate) fn products(&self) -> Vec<ProductRollup> {
        self.agg.products(&self.stream_id).expect("stream exists")
    }
}

/// A compacted changelog topic in memory: the latest value of each key.
#[derive(Clone, Debug, Default)]
pub(crate) struct Changelog(pub(crate) HashMap<Vec<u8>, Vec<u8>>);

impl Changelog {
    /// Writes records in order, as the restore reads them back.
    pub(crate) fn write(&mut self, records: Vec<Record>) {
        for Record { key, value } in records {
            changelog::keep_latest(&mut self.0, &key, &value);
        }
    }

    /// Every stream's checkpoint, pieces joined, by stream id.
    pub(crate) fn checkpoints(&self) -> Vec<(String, StreamCheckpoint)> {
        changelog::restore(&self.0)
            .expect("the changelog restores")
            .checkpoints
    }

    /// A new aggregator restored from every checkpoint.
    pub(crate) fn restore(&self, config: AggregatorConfig) -> PartitionAggregator {
        let mut agg = aggregator(config);
        for (stream_id, checkpoint) in self.checkpoints() {
            agg.restore(&stream_id, checkpoint);
        }
        agg
    }
}

/// The checkpoints one batch of changelog records restores, by stream id.
pub(crate) fn checkpoints_in(records: Vec<Record>) -> Vec<(String, StreamCheckpoint)> {
    let mut changelog = Changelog::default();
    changelog.write(records);
    changelog.checkpoints()
}

/// The streams whose heads are among `records`, in order.
pub(crate) fn head_ids(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match changelog::Key::parse(&r.key) {
            Some(changelog::Key::Head(stream_id)) => Some(stream_id.to_owned()),
            _ => None,
        })
        .collect()
}
