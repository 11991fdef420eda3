//! # livetally-benches
//!
//! The deterministic data set behind the criterion benches in `benches/`:
//! live-shopping viewer events as JSON payloads, protobuf payloads and
//! pre-decoded [`Event`]s, all describing the same events.
//!
//! The shape follows the contract's scale: 10,000 streams whose popularity is
//! Zipf-like (s = 1.1, so a few rooms carry most of the traffic), viewers
//! drawn from a population of 1,000,000, a funnel-like type mix (mostly
//! impressions and views, few clicks, carts and purchases), UUID event ids and
//! about 200 bytes of JSON per event. Every event is valid and every
//! `event_id` distinct, so an aggregator counts each one.
//!
//! The generator has its own PRNG (SplitMix64), so a seed means the same
//! bytes on every machine and for every version of every dependency.

use std::borrow::Cow;

use livetally_aggregator::{Action, Currency, Event, EventTime, EventType, OrderLine};
use livetally_ingest::encode::{to_json, to_protobuf};

/// Event time of the first event: 2025-11-26T01:20:00Z, in epoch ms.
pub const BASE_TS: EventTime = 1_764_120_000_000;

/// The wall clock the benches pass to `decode` (live mode, clock guard on):
/// one hour after [`BASE_TS`], so every event is in the past.
pub const NOW_MS: i64 = BASE_TS + 3_600_000;

/// The `content-type` header of a JSON record.
pub const JSON_CONTENT_TYPE: &[u8] = b"application/json";

/// The `content-type` header of a protobuf record.
pub const PROTOBUF_CONTENT_TYPE: &[u8] = b"application/x-protobuf";

/// Events per bench iteration: 100,000 in optimised builds, 2,000 in debug
/// builds, where `cargo test --all-targets` runs each bench once and the data
/// set must build in well under a second.
pub fn bench_events() -> usize {
    if cfg!(debug_assertions) {
        2_000
    } else {
        100_000
    }
}

/// The shape of a data set.
#[derive(Clone, Debug)]
pub struct DataSetConfig {
    /// How many events.
    pub events: usize,
    /// How many distinct streams (`live-1` … `live-<streams>`).
    pub streams: u32,
    /// Size of the viewer population (`u-1` … `u-<viewers>`).
    pub viewers: u32,
    /// Zipf exponent of stream popularity.
    pub zipf_s: f64,
    /// Seed of the generator; the same seed gives the same bytes.
    pub seed: u64,
}

impl Default for DataSetConfig {
    /// [`bench_events`] events over 10,000 streams and 1,000,000 viewers,
    /// Zipf s = 1.1.
    fn default() -> Self {
        DataSetConfig {
            events: bench_events(),
            streams: 10_000,
            viewers: 1_000_000,
            zipf_s: 1.1,
            seed: 0x11fe_7a11,
        }
    }
}

/// The same events in the three forms the benches consume, index for index.
#[derive(Clone, Debug)]
pub struct DataSet {
    /// One JSON object per record, as a producer would send it.
    pub json: Vec<Vec<u8>>,
    /// One protobuf `livetally.v1.ViewerEvent` per record.
    pub protobuf: Vec<Vec<u8>>,
    /// The events as `decode` returns them, for benching the aggregator alone.
    pub events: Vec<Event<'static>>,
}

impl DataSet {
    /// Builds the data set `config` describes.
    pub fn build(config: &DataSetConfig) -> DataSet {
        let mut generator = Generator::new(config);
        let events: Vec<Event<'static>> = (0..config.events)
            .map(|i| generator.event(i as u64))
            .collect();
        let json = events.iter().map(json_payload).collect();
        let protobuf = events.iter().map(to_protobuf).collect();
        DataSet {
            json,
            protobuf,
            events,
        }
    }

    /// The events `ms` earlier in event time: a warm-up that comes before
    /// the measured events, as live traffic's past does.
    pub fn events_earlier_by(&self, ms: i64) -> Vec<Event<'static>> {
        self.events
            .iter()
            .map(|e| Event {
                ts: e.ts - ms,
                ..e.clone()
            })
            .collect()
    }

    /// How many events the set holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the set holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Mean JSON payload size in bytes.
    pub fn mean_json_bytes(&self) -> f64 {
        mean_len(&self.json)
    }

    /// Mean protobuf payload size in bytes.
    pub fn mean_protobuf_bytes(&self) -> f64 {
        mean_len(&self.protobuf)
    }
}

fn mean_len(payloads: &[Vec<u8>]) -> f64 {
    let total: usize = payloads.iter().map(Vec::len).sum();
    total as f64 / payloads.len().max(1) as f64
}

/// The contract's JSON for `event`, plus the `client` field most producers
/// add (an unknown field: the decoder must skip it).
fn json_payload(event: &Event<'_>) -> Vec<u8> {
    const CLIENTS: [&str; 4] = [
        "ios/5.12.3",
        "android/5.12.1",
        "web/2025.11.2",
        "ios/5.11.0",
    ];
    let mut json = to_json(event);
    // The event id's last hex digit picks the client: varied, deterministic.
    let pick = event.event_id.bytes().last().map_or(0, usize::from) % CLIENTS.len();
    json.pop(); // the closing brace
    json.extend_from_slice(b",\"client\":\"");
    json.extend_from_slice(CLIENTS[pick].as_bytes());
    json.extend_from_slice(b"\"}");
    json
}

/// Type mix, per 1000 events: a live room's funnel, engagement and presence.
/// Purchases are 1 in 125 events, inside the contract's 100–1000 range.
pub const TYPE_MIX: [(EventType, u32); 11] = [
    (EventType::Impression, 459),
    (EventType::View, 180),
    (EventType::Like, 120),
    (EventType::Leave, 90),
    (EventType::Comment, 60),
    (EventType::Click, 45),
    (EventType::AddToCart, 15),
    (EventType::Share, 12),
    (EventType::Follow, 10),
    (EventType::Purchase, 8),
    (EventType::Refund, 1),
];

/// Currencies streams sell in, repeated to weight them.
const CURRENCIES: [&[u8; 3]; 10] = [
    b"USD", b"USD", b"USD", b"EUR", b"GBP", b"IDR", b"JPY", b"BRL", b"THB", b"VND",
];

/// SplitMix64: small, fast and good enough for synthetic traffic.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws events one by one.
struct Generator {
    rng: SplitMix64,
    /// Cumulative Zipf weights over stream popularity ranks, normalised to 1.
    stream_cdf: Vec<f64>,
    streams: u32,
    viewers: u32,
}

impl Generator {
    fn new(config: &DataSetConfig) -> Generator {
        let mut total = 0.0;
        let mut stream_cdf: Vec<f64> = (1..=config.streams.max(1))
            .map(|rank| {
                total += f64::from(rank).powf(-config.zipf_s);
                total
            })
            .collect();
        for w in &mut stream_cdf {
            *w /= total;
        }
        Generator {
            rng: SplitMix64(config.seed),
            stream_cdf,
            streams: config.streams.max(1),
            viewers: config.viewers.max(1),
        }
    }

    /// The `i`-th event of the set.
    fn event(&mut self, i: u64) -> Event<'static> {
        let rank = self.stream_rank();
        // Scatter popularity ranks over stream numbers, so the hottest room is
        // not simply `live-1` (7919 is prime and does not divide 10,000).
        let stream = (rank as u64 * 7919 % u64::from(self.streams)) + 1;
        let viewer = self.rng.below(u64::from(self.viewers)) + 1;
        let ty = self.event_type();
        // ~600 µs apart (100k events span a minute), 2 % of them late by up to 5 s.
        let mut ts = BASE_TS + (i * 3 / 5) as i64;
        if self.rng.below(50) == 0 {
            ts -= self.rng.below(5_000) as i64;
        }
        let seller_id =
            (self.rng.below(10) != 0).then(|| Cow::Owned(format!("shop-{}", stream % 4_000 + 1)));
        let action = match ty {
            EventType::View => Action::View,
            EventType::Leave => Action::Leave,
            EventType::Impression => Action::Impression {
                product_id: self.product_id(stream),
            },
            EventType::Click => Action::Click {
                product_id: self.product_id(stream),
            },
            EventType::AddToCart => Action::AddToCart {
                product_id: self.product_id(stream),
            },
            EventType::Purchase => Action::Purchase(self.order_line(stream)),
            EventType::Refund => Action::Refund(self.order_line(stream)),
            EventType::Like => Action::Like,
            EventType::Comment => Action::Comment,
            EventType::Share => Action::Share,
            EventType::Follow => Action::Follow,
        };
        Event {
            event_id: Cow::Owned(self.uuid()),
            stream_id: Cow::Owned(format!("live-{stream}")),
            viewer_id: Cow::Owned(format!("u-{viewer}")),
            ts,
            seller_id,
            action,
        }
    }

    /// A popularity rank in `0..streams`, Zipf-distributed.
    fn stream_rank(&mut self) -> usize {
        let u = self.rng.unit();
        self.stream_cdf
            .partition_point(|&c| c < u)
            .min(self.stream_cdf.len() - 1)
    }

    fn event_type(&mut self) -> EventType {
        let mut draw = self.rng.below(1000) as u32;
        for (ty, weight) in TYPE_MIX {
            if draw < weight {
                return ty;
            }
            draw -= weight;
        }
        EventType::Impression
    }

    /// One of the stream's 30 products; 40 % of the time one of the 3 the
    /// host has pinned.
    fn product_id(&mut self, stream: u64) -> Cow<'static, str> {
        let product = if self.rng.below(10) < 4 {
            self.rng.below(3) + 1
        } else {
            self.rng.below(30) + 1
        };
        Cow::Owned(format!("sku-{stream}-{product}"))
    }

    /// A purchase or refund line in the stream's currency.
    fn order_line(&mut self, stream: u64) -> OrderLine<'static> {
        let product_id = self.product_id(stream);
        // A product's price is fixed: derived from its id, not drawn.
        let price_seed = SplitMix64(
            product_id
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
        )
        .next_u64();
        OrderLine {
            product_id,
            order_id: Cow::Owned(format!("o-{:016x}", self.rng.next_u64())),
            quantity: 1 + u32::from(self.rng.below(10) == 0) + u32::from(self.rng.below(20) == 0),
            unit_price: 199 + (price_seed % 49_800) as i64,
            currency: Currency(*CURRENCIES[(stream % CURRENCIES.len() as u64) as usize]),
        }
    }

    /// A random (version 4 style) UUID in its 36-character text form.
    fn uuid(&mut self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits = (u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64());
        let mut text = String::with_capacity(36);
        for nibble in 0..32 {
            if matches!(nibble, 8 | 12 | 16 | 20) {
                text.push('-');
            }
            let digit = (bits >> (124 - 4 * nibble)) & 0xf;
            text.push(char::from(HEX[digit as usize]));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livetally_ingest::{decode, DecodeConfig};

    fn small() -> DataSet {
        DataSet::build(&DataSetConfig {
            events: 5_000,
            ..DataSetConfig::default()
        })
    }

    #[test]
    fn the_type_mix_sums_to_a_thousand() {
        assert_eq!(TYPE_MIX.iter().map(|(_, w)| w).sum::<u32>(), 1000);
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let (a, b) = (small(), small());
        assert_eq!(a.json, b.json);
        assert_eq!(a.protobuf, b.protobuf);
    }

    #[test]
    fn every_payload_decodes_to_its_event() {
        let data = small();
        let config = DecodeConfig::default();
        for ((json, proto), event) in data.json.iter().zip(&data.protobuf).zip(&data.events) {
            let from_json = decode(json, Some(JSON_CONTENT_TYPE), Some(NOW_MS), &config);
            assert_eq!(from_json.as_ref(), Ok(event));
            let from_proto = decode(proto, Some(PROTOBUF_CONTENT_TYPE), Some(NOW_MS), &config);
            assert_eq!(from_proto.as_ref(), Ok(event));
        }
    }

    #[test]
    fn the_shape_is_realistic() {
        let data = small();
        let mean = data.mean_json_bytes();
        assert!((170.0..=230.0).contains(&mean), "mean JSON size {mean}");
        let ids: std::collections::HashSet<&str> =
            data.events.iter().map(|e| &*e.event_id).collect();
        assert_eq!(ids.len(), data.len(), "event ids are distinct");
        // Zipf: the hottest stream alone carries several percent of the traffic.
        let mut per_stream = std::collections::HashMap::<&str, usize>::new();
        for e in &data.events {
            *per_stream.entry(&e.stream_id).or_default() += 1;
        }
        let hottest = per_stream.values().copied().max().unwrap_or(0);
        assert!(hottest * 100 > data.len() * 5, "hottest stream {hottest}");
        let purchases = data
            .events
            .iter()
            .filter(|e| matches!(e.action, Action::Purchase(_)))
            .count();
        assert!(purchases * 1000 > data.len() && purchases * 100 < data.len());
    }
}
