//! Synthetic live-shopping traffic: the records behind `livetally gen`,
//! `livetally demo`, the integration tests and the benchmarks.
//!
//! [`Traffic`] is an endless iterator of Kafka-ready [`Record`]s, decided
//! entirely by its [`TrafficConfig`] (same config, same bytes, on every
//! platform). Most records are valid events of a plausible live-commerce
//! world; a configurable share are exact re-sends of recent ones (at-least-once
//! producers), invalid records whose expected [`InvalidReason`] travels with
//! them, and late events whose `ts` lies up to a minute in the past.
//!
//! Invariants the tests hold:
//! - a [`RecordKind::Valid`] record decodes, and its `event_id` is unique;
//! - a [`RecordKind::Duplicate`] is byte-identical (payload, key and
//!   `content-type`) to one of the last [`DUPLICATE_WINDOW`] valid records;
//! - a [`RecordKind::Invalid`] record makes the decoder report exactly its
//!   reason. It never is `currency_mismatch` or `too_large`: those depend on
//!   engine state and configuration, not on the record.
//!
//! ## Layout
//! - [`model`]: streams, viewers and the funnel (what happens).
//! - [`wire`]: hand-written JSON and protobuf encoders (how it is sent).
//! - [`invalid`]: the hand-built invalid records.
//! - [`rng`]: the seeded generator and the Zipf sampler.

mod invalid;
mod model;
mod rng;
mod wire;

#[cfg(test)]
mod tests;

use std::str::FromStr;

#[cfg(test)]
use livetally_aggregator::Event;
use livetally_aggregator::InvalidReason;

use self::model::{Draft, Model};
use self::rng::{splitmix64, Prob, Rng};
use self::wire::{IdTag, Spec, Wire};

/// The `content-type` of JSON records.
pub const JSON: &str = "application/json";
/// The `content-type` of protobuf records.
pub const PROTOBUF: &str = "application/x-protobuf";

/// Duplicates re-send one of this many most recent valid records: well
/// inside the engine's 10-minute duplicate horizon at any realistic rate.
pub const DUPLICATE_WINDOW: usize = 1024;

/// Share of records sent without a `content-type` header, so that consumers
/// exercise sniffing.
const UNLABELLED: Prob = Prob::new(0.20);
/// Share of records whose `ts` is an RFC 3339 string instead of epoch ms.
const TS_AS_TEXT: Prob = Prob::new(0.05);
/// Most event-time jitter added to a record's `ts`, in ms.
pub(crate) const JITTER_MS: u64 = 2;
/// Late events are shifted back by 1 s up to this, and never before
/// `start_ts` minus this.
const MAX_LATENESS_MS: i64 = 60_000;

/// What traffic to generate. Every field is part of the seed: the same config
/// always yields the same records.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficConfig {
    /// Seeds every random choice, and the ids (two seeds never share an
    /// `event_id` or `order_id`).
    pub seed: u64,
    /// Number of live streams (`live-1`..=`live-N`), popularity Zipf-like.
    pub streams: usize,
    /// Event time of the first record, epoch ms (clamped to ≥ 0).
    pub start_ts: i64,
    /// Event-time density: `ts` advances by `1000 / events_per_second` ms per
    /// record on average (1000 → +1 ms per record), whatever the real rate.
    pub events_per_second: u64,
    /// Share of records that re-send a recent valid record unchanged.
    pub duplicate_rate: f64,
    /// Share of records that are invalid.
    pub invalid_rate: f64,
    /// Share of valid events whose `ts` is shifted back by 1–60 s.
    pub late_rate: f64,
    /// The records' encoding.
    pub format: Format,
    /// Products each stream sells (`sku-<stream>-1`..).
    pub products_per_stream: usize,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            seed: 0,
            streams: 100,
            // 2025-11-26T00:00:00Z: fixed, so default traffic is reproducible.
            // `demo` sets the wall clock here.
            start_ts: 1_764_115_200_000,
            events_per_second: 1000,
            duplicate_rate: 0.02,
            invalid_rate: 0.005,
            late_rate: 0.01,
            format: Format::Json,
            products_per_stream: 20,
        }
    }
}

/// How records are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// JSON objects (`application/json`).
    #[default]
    Json,
    /// Protobuf `livetally.v1.ViewerEvent` (`application/x-protobuf`).
    Protobuf,
    /// Each record JSON or protobuf at random, as from a mixed producer fleet.
    Mixed,
}

impl FromStr for Format {
    type Err = String;

    /// `json`, `protobuf` or `mixed`, as the command line spells them.
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "json" => Ok(Format::Json),
            "protobuf" | "proto" => Ok(Format::Protobuf),
            "mixed" => Ok(Format::Mixed),
            _ => Err(format!(
                "unknown format {s:?}: expected json, protobuf or mixed"
            )),
        }
    }
}

/// One Kafka record, ready to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record key: the `stream_id` (for a malformed record, the stream it
    /// would belong to).
    pub key: Vec<u8>,
    /// The record value.
    pub payload: Vec<u8>,
    /// The `content-type` header, [`JSON`] or [`PROTOBUF`]; `None` on about a
    /// fifth of records, which consumers must sniff.
    pub content_type: Option<&'static str>,
    /// What the engine must make of this record.
    pub kind: RecordKind,
}

/// What a record is, and so what the engine must do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A new valid event: counted.
    Valid,
    /// An exact re-send of an earlier valid record: decodes, counted as a
    /// duplicate, changes no figure.
    Duplicate,
    /// Dead-lettered, and this is the reason the decoder reports.
    Invalid(InvalidReason),
}

/// The endless, deterministic record stream of one [`TrafficConfig`].
pub struct Traffic {
    rng: Rng,
    model: Model,
    clock: Clock,
    /// Seed-derived part of every id.
    tag: IdTag,
    format: Format,
    /// `roll < invalid` → invalid record; `roll < invalid_or_duplicate` →
    /// duplicate; else a new valid event (one draw decides).
    invalid: Prob,
    invalid_or_duplicate: Prob,
    late: Prob,
    /// Counter behind valid `event_id`s.
    next_event: u64,
    /// Counter behind invalid records' ids.
    next_invalid: u64,
    /// The last [`DUPLICATE_WINDOW`] valid events and how they were sent;
    /// re-encoding one gives back the identical bytes.
    recent: Vec<(Spec, Wire)>,
    recent_at: usize,
}

/// One record's worth of traffic, before encoding.
enum Item {
    Valid(Spec, Wire),
    Duplicate(Spec, Wire),
    Invalid {
        stream: u32,
        invalid: invalid::Invalid,
    },
}

impl Traffic {
    /// The traffic of `config`. Zero streams or products count as one.
    pub fn new(config: TrafficConfig) -> Traffic {
        let mut rng = Rng::new(config.seed);
        let model = Model::new(config.streams, config.products_per_stream, &mut rng);
        let mut tag = [0u8; 8];
        let mut hex = Vec::with_capacity(8);
        let mut seed = config.seed ^ 0x6c69_7665_7461_6c6c; // "livetall"
        wire::hex(splitmix64(&mut seed), 8, &mut hex);
        tag.copy_from_slice(&hex);
        let invalid = Prob::new(config.invalid_rate);
        Traffic {
            rng,
            model,
            clock: Clock::new(config.start_ts.max(0), config.events_per_second),
            tag,
            format: config.format,
            invalid,
            invalid_or_duplicate: invalid.plus(Prob::new(config.duplicate_rate)),
            late: Prob::new(config.late_rate),
            next_event: 0,
            next_invalid: 0,
            recent: Vec::with_capacity(DUPLICATE_WINDOW),
            recent_at: 0,
        }
    }

    /// The next record.
    pub fn next_record(&mut self) -> Record {
        match self.next_item() {
            Item::Valid(spec, wire) => self.encode(&spec, wire, RecordKind::Valid),
            Item::Duplicate(spec, wire) => self.encode(&spec, wire, RecordKind::Duplicate),
            Item::Invalid { stream, invalid } => Record {
                key: stream_key(stream),
                payload: invalid.payload,
                content_type: invalid.content_type,
                kind: RecordKind::Invalid(invalid.reason),
            },
        }
    }

    fn encode(&self, spec: &Spec, wire: Wire, kind: RecordKind) -> Record {
        let mut payload = Vec::with_capacity(if wire.protobuf { 160 } else { 288 });
        wire::encode(spec, wire, &self.tag, &mut payload);
        Record {
            key: stream_key(spec.stream),
            payload,
            content_type: wire.content_type(),
            kind,
        }
    }

    fn next_item(&mut self) -> Item {
        let rng = &mut self.rng;
        let ts = self.clock.tick(rng);
        let protobuf = match self.format {
            Format::Json => false,
            Format::Protobuf => true,
            Format::Mixed => rng.next_u64() >> 63 == 1,
        };
        let labelled = !rng.chance(UNLABELLED);
        let roll = rng.next_u64();

        if roll < self.invalid.0 {
            let stream = self.model.pick_stream(rng);
            let room = &self.model.streams[stream];
            let origin = invalid::Origin {
                tag: &self.tag,
                id: self.next_invalid,
                stream: room.number,
                viewer: self.model.pick_viewer(stream, rng),
                seller: room.seller,
                ts,
            };
            self.next_invalid += 1;
            let invalid = invalid::record(&origin, protobuf, labelled, rng);
            return Item::Invalid {
                stream: room.number,
                invalid,
            };
        }

        if roll < self.invalid_or_duplicate.0 && !self.recent.is_empty() {
            let (spec, wire) = self.recent[rng.below(self.recent.len() as u64) as usize];
            return Item::Duplicate(spec, wire);
        }

        let draft = self.model.next(rng);
        let ts = if rng.chance(self.late) {
            let floor = self.clock.start.saturating_sub(MAX_LATENESS_MS).max(0);
            (ts - rng.between(1000, MAX_LATENESS_MS as u64) as i64).max(floor)
        } else {
            ts
        };
        let with_seller = Model::sends_seller(rng);
        let wire = Wire {
            protobuf,
            ts_text: rng.chance(TS_AS_TEXT) && ts <= MAX_RFC3339_MS,
            labelled,
        };
        let spec = self.spec(&draft, ts, with_seller);
        if self.recent.len() < DUPLICATE_WINDOW {
            self.recent.push((spec, wire));
        } else {
            self.recent[self.recent_at] = (spec, wire);
            self.recent_at = (self.recent_at + 1) % DUPLICATE_WINDOW;
        }
        Item::Valid(spec, wire)
    }

    fn spec(&mut self, draft: &Draft, ts: i64, with_seller: bool) -> Spec {
        let room = &self.model.streams[draft.stream];
        let id = self.next_event;
        self.next_event += 1;
        Spec {
            id,
            ty: draft.ty,
            stream: room.number,
            viewer: draft.viewer,
            ts,
            seller: with_seller.then_some(room.seller),
            product: draft.product,
            order: draft.order,
            quantity: draft.quantity,
            unit_price: draft.unit_price,
            currency: room.currency,
        }
    }
}

impl Iterator for Traffic {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        Some(self.next_record())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

/// The decoded form of every record of `config`'s traffic that decodes
/// (valid events and duplicates, in record order; invalid records skipped),
/// without encoding: tests compare it with the encoded records.
#[cfg(test)]
pub fn events(config: TrafficConfig) -> impl Iterator<Item = Event<'static>> {
    let mut traffic = Traffic::new(config);
    std::iter::from_fn(move || loop {
        match traffic.next_item() {
            Item::Valid(spec, _) | Item::Duplicate(spec, _) => {
                return Some(wire::to_event(&spec, &traffic.tag))
            }
            Item::Invalid { .. } => continue,
        }
    })
}

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z).
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

fn stream_key(stream: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(b"live-");
    wire::decimal(u64::from(stream), &mut key);
    key
}

/// Event time: `start` plus `1000 / per_second` ms per record, with a little
/// jitter, in integer arithmetic so it never drifts.
struct Clock {
    start: i64,
    now: i64,
    /// Milliseconds × `per_second` not yet turned into whole ms.
    carry: u64,
    per_second: u64,
    started: bool,
}

impl Clock {
    fn new(start: i64, per_second: u64) -> Clock {
        Clock {
            start,
            now: start,
            carry: 0,
            per_second: per_second.max(1),
            started: false,
        }
    }

    /// The `ts` of the next record (the very first is exactly `start`).
    fn tick(&mut self, rng: &mut Rng) -> i64 {
        let base = self.now;
        self.carry += 1000;
        if self.carry >= self.per_second {
            self.now += (self.carry / self.per_second) as i64;
            self.carry %= self.per_second;
        }
        if std::mem::replace(&mut self.started, true) {
            base + rng.below(JITTER_MS + 1) as i64
        } else {
            base
        }
    }
}
