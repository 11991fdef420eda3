//! An independent reference count of the contract's figures (spec §1–§2).
//!
//! Written from the contract alone: it decodes records with `serde_json` and
//! prost's `ViewerEvent`, validates them with its own (simple) rules and keeps
//! exact sets for every distinct count. It never calls livetally's own
//! decoder or aggregator, so a bug there cannot hide in both.
//!
//! The generator only emits clear-cut invalid records, so these rules need
//! not settle every corner the engine's validator documents (size limits,
//! the wall-clock guard, upper bounds of quantity and price).

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message as _;
use serde_json::{json, Value};

/// Tolerance for ratio figures.
pub const RATIO_TOLERANCE: f64 = 1e-9;
/// Spec §2: distinct counts are exact up to this many ids…
pub const SPEC_EXACT_DISTINCT: u64 = 1_000;
/// …and within this relative error beyond.
pub const SPEC_DISTINCT_ERROR: f64 = 0.01;

/// Figures compared exactly (integers, strings and nulls).
pub const EXACT_FIGURES: [&str; 28] = [
    "stream_id",
    "seller_id",
    "currency",
    "first_event_ts",
    "last_event_ts",
    "views",
    "unique_viewers",
    "concurrent_viewers",
    "peak_concurrent_viewers",
    "impressions",
    "clicks",
    "add_to_carts",
    "likes",
    "comments",
    "shares",
    "follows",
    "orders",
    "items_sold",
    "gmv",
    "refunds",
    "net_gmv",
    "commission",
    "unique_buyers",
    "gpm",
    "aov",
    "kind",
    // A cumulative rollup has no window bounds (absent or null).
    "window_start",
    "window_end",
];

/// Ratio figures, compared within [`RATIO_TOLERANCE`].
pub const RATIOS: [&str; 3] = ["ctr", "click_to_order_rate", "conversion_rate"];

/// Per-product figures (spec §2), all exact.
pub const PRODUCT_FIGURES: [&str; 7] = [
    "product_id",
    "impressions",
    "clicks",
    "add_to_carts",
    "orders",
    "items_sold",
    "gmv",
];

/// The contract's event types.
const TYPES: [&str; 11] = [
    "view",
    "leave",
    "impression",
    "click",
    "add_to_cart",
    "purchase",
    "refund",
    "like",
    "comment",
    "share",
    "follow",
];

/// What the reference made of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// New and valid: counted.
    Counted,
    /// Same (`stream_id`, `event_id`) as an event already counted.
    Duplicate,
    /// Dead-lettered for this reason.
    Invalid(&'static str),
}

/// One decoded, valid event.
#[derive(Clone, Debug)]
pub struct Event {
    pub event_id: String,
    pub ty: &'static str,
    pub stream_id: String,
    pub viewer_id: String,
    pub ts: i64,
    pub seller_id: Option<String>,
    pub product_id: Option<String>,
    pub order_id: Option<String>,
    pub quantity: i64,
    pub unit_price: i64,
    pub currency: Option<String>,
}

/// A field as the wire carried it.
enum Raw {
    Absent,
    Str(String),
    Int(i64),
    Other,
}

/// Decodes one record value: JSON or protobuf by the `content-type` header,
/// or by its first byte when the header is absent (`{` → JSON).
pub fn decode(payload: Option<&[u8]>, content_type: Option<&[u8]>) -> Result<Event, &'static str> {
    let payload = match payload {
        Some(p) if !p.is_empty() => p,
        _ => return Err("malformed"),
    };
    let json = match content_type {
        Some(b"application/json") => true,
        Some(b"application/x-protobuf") => false,
        _ => payload[0] == b'{',
    };
    let fields = if json {
        json_fields(payload)?
    } else {
        protobuf_fields(payload)?
    };
    validate(fields)
}

/// Whether [`decode`] reads this record as JSON.
pub fn is_json(payload: Option<&[u8]>, content_type: Option<&[u8]>) -> bool {
    match content_type {
        Some(b"application/json") => true,
        Some(b"application/x-protobuf") => false,
        _ => payload.and_then(|p| p.first()) == Some(&b'{'),
    }
}

/// `type` first, then the other fields in the spec table's order.
struct Fields {
    ty: Result<&'static str, &'static str>,
    event_id: Raw,
    stream_id: Raw,
    viewer_id: Raw,
    ts: Raw,
    seller_id: Raw,
    product_id: Raw,
    order_id: Raw,
    quantity: Raw,
    unit_price: Raw,
    currency: Raw,
}

fn json_fields(payload: &[u8]) -> Result<Fields, &'static str> {
    let value: Value = serde_json::from_slice(payload).map_err(|_| "malformed")?;
    let Value::Object(map) = value else {
        return Err("malformed");
    };
    let raw = |name: &str| match map.get(name) {
        None | Some(Value::Null) => Raw::Absent,
        Some(Value::String(s)) => Raw::Str(s.clone()),
        Some(Value::Number(n)) if n.is_i64() => Raw::Int(n.as_i64().unwrap_or_default()),
        Some(_) => Raw::Other,
    };
    let ty = match map.get("type") {
        None | Some(Value::Null) => Err("missing_field"),
        Some(Value::String(s)) => TYPES
            .iter()
            .find(|t| **t == s.as_str())
            .copied()
            .ok_or("unknown_type"),
        Some(_) => Err("unknown_type"),
    };
    Ok(Fields {
        ty,
        event_id: raw("event_id"),
        stream_id: raw("stream_id"),
        viewer_id: raw("viewer_id"),
        ts: raw("ts"),
        seller_id: raw("seller_id"),
        product_id: raw("product_id"),
        order_id: raw("order_id"),
        quantity: raw("quantity"),
        unit_price: raw("unit_price"),
        currency: raw("currency"),
    })
}

fn protobuf_fields(payload: &[u8]) -> Result<Fields, &'static str> {
    use livetally_proto::v1::viewer_event::Ts;
    let event = livetally_proto::v1::ViewerEvent::decode(payload).map_err(|_| "malformed")?;
    let s = |v: Option<String>| v.map_or(Raw::Absent, Raw::Str);
    let i = |v: Option<i64>| v.map_or(Raw::Absent, Raw::Int);
    let ty = match event.r#type {
        0 => Err("missing_field"),
        n @ 1..=11 => Ok(TYPES[n as usize - 1]),
        _ => Err("unknown_type"),
    };
    Ok(Fields {
        ty,
        event_id: s(event.event_id),
        stream_id: s(event.stream_id),
        viewer_id: s(event.viewer_id),
        ts: match event.ts {
            None => Raw::Absent,
            Some(Ts::TsMs(ms)) => Raw::Int(ms),
            Some(Ts::TsRfc3339(text)) => Raw::Str(text),
        },
        seller_id: s(event.seller_id),
        product_id: s(event.product_id),
        order_id: s(event.order_id),
        quantity: i(event.quantity),
        unit_price: i(event.unit_price),
        currency: s(event.currency),
    })
}

fn id(raw: Raw) -> Result<String, &'static str> {
    match raw {
        Raw::Str(s) if !s.is_empty() && s.len() <= 128 => Ok(s),
        Raw::Absent => Err("missing_field"),
        _ => Err("bad_value"),
    }
}

fn validate(f: Fields) -> Result<Event, &'static str> {
    let ty = f.ty?;
    let event_id = id(f.event_id)?;
    let stream_id = id(f.stream_id)?;
    let viewer_id = id(f.viewer_id)?;
    let ts = match f.ts {
        Raw::Int(ms) => ms,
        Raw::Str(text) => rfc3339_ms(&text).ok_or("bad_timestamp")?,
        Raw::Absent => return Err("missing_field"),
        Raw::Other => return Err("bad_timestamp"),
    };
    if ts < 0 {
        return Err("bad_timestamp");
    }
    let seller_id = match f.seller_id {
        Raw::Absent => None,
        Raw::Str(s) if s.is_empty() => None,
        Raw::Str(s) if s.len() <= 128 => Some(s),
        _ => return Err("bad_value"),
    };
    let mut event = Event {
        event_id,
        ty,
        stream_id,
        viewer_id,
        ts,
        seller_id,
        product_id: None,
        order_id: None,
        quantity: 0,
        unit_price: 0,
        currency: None,
    };
    if matches!(
        ty,
        "impression" | "click" | "add_to_cart" | "purchase" | "refund"
    ) {
        event.product_id = Some(id(f.product_id)?);
    }
    if matches!(ty, "purchase" | "refund") {
        event.order_id = Some(id(f.order_id)?);
        event.quantity = match f.quantity {
            Raw::Int(q) if q >= 1 => q,
            Raw::Absent => return Err("missing_field"),
            _ => return Err("bad_value"),
        };
        event.unit_price = match f.unit_price {
            Raw::Int(p) if p >= 0 => p,
            Raw::Absent => return Err("missing_field"),
            _ => return Err("bad_value"),
        };
        event.currency = Some(match f.currency {
            Raw::Str(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => c,
            Raw::Absent => return Err("missing_field"),
            _ => return Err("bad_value"),
        });
    }
    Ok(event)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into epoch ms,
/// truncating below the millisecond; `None` when unparsable or before 1970.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[month as usize - 1] {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0i64;
    if b[at] == b'.' {
        let start = at + 1;
        at = start;
        while at < b.len() && b[at].is_ascii_digit() {
            at += 1;
        }
        if at == start {
            return None;
        }
        let mut digits = text[start..at].to_string();
        digits.truncate(3);
        while digits.len() < 3 {
            digits.push('0');
        }
        millis = digits.parse().ok()?;
    }
    let rest = &b[at..];
    let offset_minutes = if rest == b"Z" || rest == b"z" {
        0
    } else if rest.len() == 6 && matches!(rest[0], b'+' | b'-') && rest[3] == b':' {
        let (hh, mm) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
        if hh > 23 || mm > 59 {
            return None;
        }
        if rest[0] == b'+' {
            hh * 60 + mm
        } else {
            -(hh * 60 + mm)
        }
    } else {
        return None;
    };
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    let ms = seconds * 1000 + millis;
    (ms >= 0).then_some(ms)
}

/// `num / den` rounded half away from zero (`den > 0`).
pub fn div_round(num: i128, den: i128) -> i128 {
    let q = num / den;
    let r = num % den;
    if 2 * r.abs() >= den {
        q + num.signum()
    } else {
        q
    }
}

/// Running figures of one product.
#[derive(Clone, Debug, Default)]
pub struct ProductRef {
    pub impressions: u64,
    pub clicks: u64,
    pub add_to_carts: u64,
    pub orders: HashSet<String>,
    pub items_sold: i64,
    pub gmv: i64,
}

/// Running figures of one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamRef {
    /// The input partition its records came from.
    pub partition: i32,
    pub seen: HashSet<String>,
    pub counts: HashMap<&'static str, u64>,
    pub currency: Option<String>,
    pub seller_id: Option<String>,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub viewers: HashSet<String>,
    pub buyers: HashSet<String>,
    /// Latest presence per viewer: (`ts`, is a leave); the max wins, so at
    /// equal `ts` a leave beats a view.
    pub presence: HashMap<String, (i64, bool)>,
    /// Every counted presence event: (`ts`, is a leave, viewer), for the
    /// peak by event time.
    pub presence_events: Vec<(i64, bool, String)>,
    pub orders: HashSet<String>,
    pub items_sold: i64,
    pub gmv: i64,
    pub refunds: i64,
    pub products: BTreeMap<String, ProductRef>,
}

impl StreamRef {
    fn count(&mut self, e: &Event) {
        *self.counts.entry(e.ty).or_default() += 1;
        self.first_ts = Some(self.first_ts.map_or(e.ts, |t| t.min(e.ts)));
        self.last_ts = Some(self.last_ts.map_or(e.ts, |t| t.max(e.ts)));
        if self.seller_id.is_none() {
            self.seller_id.clone_from(&e.seller_id);
        }
        match e.ty {
            "view" | "leave" => {
                if e.ty == "view" {
                    self.viewers.insert(e.viewer_id.clone());
                }
                let candidate = (e.ts, e.ty == "leave");
                self.presence_events
                    .push((e.ts, e.ty == "leave", e.viewer_id.clone()));
                let latest = self
                    .presence
                    .entry(e.viewer_id.clone())
                    .or_insert(candidate);
                *latest = (*latest).max(candidate);
            }
            "impression" => self.product(e).impressions += 1,
            "click" => self.product(e).clicks += 1,
            "add_to_cart" => self.product(e).add_to_carts += 1,
            "purchase" => {
                self.currency
                    .get_or_insert_with(|| e.currency.clone().unwrap_or_default());
                let amount = e.quantity * e.unit_price;
                let order = e.order_id.clone().unwrap_or_default();
                self.orders.insert(order.clone());
                self.items_sold += e.quantity;
                self.gmv += amount;
                self.buyers.insert(e.viewer_id.clone());
                let p = self.product(e);
                p.orders.insert(order);
                p.items_sold += e.quantity;
                p.gmv += amount;
            }
            "refund" => {
                self.currency
                    .get_or_insert_with(|| e.currency.clone().unwrap_or_default());
                self.refunds += e.quantity * e.unit_price;
            }
            _ => {}
        }
    }

    fn product(&mut self, e: &Event) -> &mut ProductRef {
        self.products
            .entry(e.product_id.clone().unwrap_or_default())
            .or_default()
    }

    fn n(&self, ty: &str) -> u64 {
        self.counts.get(ty).copied().unwrap_or(0)
    }

    /// The highest count of viewers present at any event time: the
    /// presence events in event-time order, counted after all those at one
    /// instant (a viewer's latest by `ts` wins, a leave at equal `ts`).
    fn peak_concurrent(&self) -> u64 {
        let mut events = self.presence_events.clone();
        events.sort();
        let mut latest: HashMap<&str, (i64, bool)> = HashMap::new();
        let (mut present, mut peak) = (0u64, 0u64);
        for (i, (ts, leave, viewer)) in events.iter().enumerate() {
            let was = latest.get(viewer.as_str()).is_some_and(|(_, l)| !l);
            let now = latest.entry(viewer.as_str()).or_insert((*ts, *leave));
            *now = (*now).max((*ts, *leave));
            match (was, !now.1) {
                (false, true) => present += 1,
                (true, false) => present -= 1,
                _ => {}
            }
            if events.get(i + 1).is_none_or(|next| next.0 != *ts) {
                peak = peak.max(present);
            }
        }
        peak
    }

    /// The cumulative rollup the contract expects, as JSON (without
    /// `revision`).
    pub fn expected(&self, stream_id: &str) -> Value {
        let views = self.n("view");
        let impressions = self.n("impression");
        let clicks = self.n("click");
        let orders = self.orders.len() as u64;
        let unique_viewers = self.viewers.len() as u64;
        let unique_buyers = self.buyers.len() as u64;
        let concurrent = self.presence.values().filter(|(_, leave)| !leave).count() as u64;
        let net_gmv = self.gmv - self.refunds;
        let ratio = |n: u64, d: u64| {
            if d == 0 {
                Value::Null
            } else {
                json!(n as f64 / d as f64)
            }
        };
        let money = |n: i128, d: u64| {
            if d == 0 {
                Value::Null
            } else {
                json!(div_round(n, i128::from(d)) as i64)
            }
        };
        json!({
            "kind": "cumulative",
            "stream_id": stream_id,
            "seller_id": self.seller_id,
            "currency": self.currency,
            "first_event_ts": self.first_ts,
            "last_event_ts": self.last_ts,
            "views": views,
            "unique_viewers": unique_viewers,
            "concurrent_viewers": concurrent,
            "peak_concurrent_viewers": self.peak_concurrent(),
            "impressions": impressions,
            "clicks": clicks,
            "add_to_carts": self.n("add_to_cart"),
            "likes": self.n("like"),
            "comments": self.n("comment"),
            "shares": self.n("share"),
            "follows": self.n("follow"),
            "orders": orders,
            "items_sold": self.items_sold,
            "gmv": self.gmv,
            "refunds": self.refunds,
            "net_gmv": net_gmv,
            "commission": div_round(i128::from(net_gmv) * 10, 100) as i64,
            "unique_buyers": unique_buyers,
            "ctr": ratio(clicks, impressions),
            "click_to_order_rate": ratio(orders, clicks),
            "conversion_rate": ratio(unique_buyers, unique_viewers),
            "gpm": money(i128::from(self.gmv) * 1000, views),
            "aov": money(i128::from(self.gmv), orders),
        })
    }

    /// The product list the contract expects, by `product_id`.
    pub fn expected_products(&self) -> BTreeMap<String, Value> {
        self.products
            .iter()
            .map(|(id, p)| {
                let v = json!({
                    "product_id": id,
                    "impressions": p.impressions,
                    "clicks": p.clicks,
                    "add_to_carts": p.add_to_carts,
                    "orders": p.orders.len() as u64,
                    "items_sold": p.items_sold,
                    "gmv": p.gmv,
                });
                (id.clone(), v)
            })
            .collect()
    }
}

/// The reference count over a sequence of records.
#[derive(Debug, Default)]
pub struct Reference {
    pub streams: BTreeMap<String, StreamRef>,
    /// What became of each record, by (partition, offset).
    pub outcomes: BTreeMap<(i32, i64), Outcome>,
    /// How each record was encoded (`true`: JSON), by (partition, offset).
    pub json: BTreeMap<(i32, i64), bool>,
}

impl Reference {
    /// Adds one record. Records must come in input order within a partition
    /// (every stream lives in one partition, so that is each stream's order).
    pub fn add(
        &mut self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
        content_type: Option<&[u8]>,
    ) -> Outcome {
        self.json
            .insert((partition, offset), is_json(payload, content_type));
        let outcome = match decode(payload, content_type) {
            Err(reason) => Outcome::Invalid(reason),
            Ok(event) => {
                let stream = self
                    .streams
                    .entry(event.stream_id.clone())
                    .or_insert_with(|| StreamRef {
                        partition,
                        ..StreamRef::default()
                    });
                assert_eq!(
                    stream.partition, partition,
                    "stream {} has records in two partitions; the reference needs one order per stream",
                    event.stream_id
                );
                let mismatch = matches!(event.ty, "purchase" | "refund")
                    && stream
                        .currency
                        .as_ref()
                        .is_some_and(|c| Some(c) != event.currency.as_ref());
                if stream.seen.contains(&event.event_id) {
                    Outcome::Duplicate
                } else if mismatch {
                    Outcome::Invalid("currency_mismatch")
                } else {
                    stream.seen.insert(event.event_id.clone());
                    stream.count(&event);
                    Outcome::Counted
                }
            }
        };
        self.outcomes.insert((partition, offset), outcome);
        outcome
    }

    /// Records with this outcome among those matching `filter`.
    pub fn count_where(&self, filter: impl Fn(&(i32, i64), &Outcome) -> bool) -> u64 {
        self.outcomes.iter().filter(|(at, o)| filter(at, o)).count() as u64
    }

    /// Counted events.
    pub fn counted(&self) -> u64 {
        self.count_where(|_, o| *o == Outcome::Counted)
    }

    /// Duplicates.
    pub fn duplicates(&self) -> u64 {
        self.count_where(|_, o| *o == Outcome::Duplicate)
    }

    /// Invalid records by reason.
    pub fn invalid_by_reason(&self) -> BTreeMap<&'static str, u64> {
        let mut by = BTreeMap::new();
        for outcome in self.outcomes.values() {
            if let Outcome::Invalid(reason) = outcome {
                *by.entry(*reason).or_default() += 1;
            }
        }
        by
    }

    /// Invalid records: (partition, offset) → reason.
    pub fn invalid(&self) -> BTreeMap<(i32, i64), &'static str> {
        self.outcomes
            .iter()
            .filter_map(|(at, o)| match o {
                Outcome::Invalid(reason) => Some((*at, *reason)),
                _ => None,
            })
            .collect()
    }

    /// Differences between these streams' expected cumulative figures and
    /// `actual` rollups (one per stream); empty when they agree.
    pub fn diff_streams(&self, actual: &[Value]) -> Vec<String> {
        let mut problems = Vec::new();
        let mut by_id: BTreeMap<String, &Value> = BTreeMap::new();
        for rollup in actual {
            let id = rollup["stream_id"].as_str().unwrap_or_default().to_string();
            if by_id.insert(id.clone(), rollup).is_some() {
                problems.push(format!("stream {id:?} listed twice"));
            }
        }
        for id in by_id.keys() {
            if !self.streams.contains_key(id) {
                problems.push(format!("unexpected stream {id:?}"));
            }
        }
        for (id, stream) in &self.streams {
            match by_id.get(id) {
                None => problems.push(format!("missing stream {id:?}")),
                Some(actual) => problems.extend(diff_rollup(&stream.expected(id), actual)),
            }
        }
        problems
    }
}

/// Differences between an expected cumulative rollup and an actual one.
pub fn diff_rollup(expected: &Value, actual: &Value) -> Vec<String> {
    let id = expected["stream_id"].as_str().unwrap_or("?");
    let mut problems = Vec::new();
    // Spec §2: distinct counts are exact up to 1,000 ids and within 1 % beyond;
    // so are the figures derived from them.
    let beyond_exact = |field: &str| {
        expected[field]
            .as_u64()
            .is_some_and(|n| n > SPEC_EXACT_DISTINCT)
    };
    let tolerance = |field: &str| -> f64 {
        let depends_on: &[&str] = match field {
            "unique_viewers" => &["unique_viewers"],
            "unique_buyers" => &["unique_buyers"],
            "orders" | "aov" | "click_to_order_rate" => &["orders"],
            "conversion_rate" => &["unique_viewers", "unique_buyers"],
            _ => &[],
        };
        depends_on.iter().filter(|f| beyond_exact(f)).count() as f64 * SPEC_DISTINCT_ERROR
    };
    for field in EXACT_FIGURES {
        let want = expected.get(field).unwrap_or(&Value::Null);
        let got = actual.get(field).unwrap_or(&Value::Null);
        let close = match (want.as_f64(), got.as_f64()) {
            (Some(w), Some(g)) if tolerance(field) > 0.0 => {
                (w - g).abs() <= w.abs() * tolerance(field) + 0.5
            }
            _ => false,
        };
        if want != got && !close {
            problems.push(format!("{id}.{field}: expected {want}, got {got}"));
        }
    }
    for field in RATIOS {
        let want = &expected[field];
        let got = actual.get(field).unwrap_or(&Value::Null);
        let same = match (want.as_f64(), got.as_f64()) {
            (Some(w), Some(g)) => (w - g).abs() <= RATIO_TOLERANCE + w.abs() * tolerance(field),
            _ => want.is_null() && got.is_null(),
        };
        if !same {
            problems.push(format!("{id}.{field}: expected {want}, got {got}"));
        }
    }
    let concurrent = actual["concurrent_viewers"].as_u64();
    let peak = actual["peak_concurrent_viewers"].as_u64();
    if !matches!((concurrent, peak), (Some(c), Some(p)) if p >= c) {
        problems.push(format!(
            "{id}: peak_concurrent_viewers {peak:?} < concurrent_viewers {concurrent:?}"
        ));
    }
    if !actual["revision"].is_u64() {
        problems.push(format!(
            "{id}: revision {} is not a non-negative integer",
            actual["revision"]
        ));
    }
    problems
}

/// Differences between a stream's expected products and an actual list.
pub fn diff_products(stream_id: &str, stream: &StreamRef, actual: &[Value]) -> Vec<String> {
    let expected = stream.expected_products();
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for product in actual {
        let id = product["product_id"].as_str().unwrap_or_default();
        if !seen.insert(id.to_string()) {
            problems.push(format!("{stream_id}: product {id:?} listed twice"));
            continue;
        }
        match expected.get(id) {
            None => problems.push(format!("{stream_id}: unexpected product {id:?}")),
            Some(want) => {
                for field in PRODUCT_FIGURES {
                    if want[field] != product[field] {
                        problems.push(format!(
                            "{stream_id}/{id}.{field}: expected {}, got {}",
                            want[field], product[field]
                        ));
                    }
                }
            }
        }
    }
    for id in expected.keys() {
        if !seen.contains(id) {
            problems.push(format!("{stream_id}: missing product {id:?}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2025-11-26T00:00:00.123Z"),
            Some(1_764_115_200_123)
        );
        assert_eq!(
            rfc3339_ms("2025-11-26T01:00:00.1234+01:00"),
            Some(1_764_115_200_123)
        );
        assert_eq!(rfc3339_ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(rfc3339_ms("2025-02-30T25:61:00Z"), None);
        assert_eq!(rfc3339_ms("2025-02-29T00:00:00Z"), None);
        assert_eq!(rfc3339_ms("yesterday"), None);
        assert_eq!(rfc3339_ms("1969-12-31T23:59:59Z"), None);
    }

    #[test]
    fn rounding() {
        assert_eq!(div_round(15, 10), 2);
        assert_eq!(div_round(14, 10), 1);
        assert_eq!(div_round(-15, 10), -2);
        assert_eq!(div_round(-14, 10), -1);
        assert_eq!(div_round(0, 3), 0);
    }
}
