//! Rollups on the wire: JSON (default) or `livetally.v1.Rollup` protobuf.

use livetally_aggregator::{ProductRollup, RollupKind, StreamRollup};
use livetally_proto::v1::{ProductFigures, Rollup};
use prost::Message;

/// The encoding of rollup-topic values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RollupFormat {
    /// One JSON object per record (`application/json`).
    #[default]
    Json,
    /// `livetally.v1.Rollup` (`application/x-protobuf`).
    Protobuf,
}

impl RollupFormat {
    /// The `content-type` header value written with each record.
    pub fn content_type(self) -> &'static str {
        match self {
            RollupFormat::Json => "application/json",
            RollupFormat::Protobuf => "application/x-protobuf",
        }
    }

    /// Decodes one rollup written by [`RollupFormat::encode`].
    pub fn decode(self, bytes: &[u8]) -> Result<StreamRollup, String> {
        match self {
            RollupFormat::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            RollupFormat::Protobuf => Rollup::decode(bytes)
                .map(from_protobuf)
                .map_err(|e| e.to_string()),
        }
    }

    /// The format a `content-type` header names (JSON when absent or unknown).
    pub fn from_content_type(content_type: Option<&[u8]>) -> RollupFormat {
        match content_type {
            Some(b"application/x-protobuf") => RollupFormat::Protobuf,
            _ => RollupFormat::Json,
        }
    }

    /// Encodes one rollup.
    pub fn encode(self, rollup: &StreamRollup) -> Vec<u8> {
        match self {
            RollupFormat::Json => to_json(rollup),
            RollupFormat::Protobuf => to_protobuf(rollup).encode_to_vec(),
        }
    }
}

/// The rollup as its JSON object: the bytes `serde_json` writes for it (a
/// test holds them equal). See [`to_json_text`].
pub fn to_json(rollup: &StreamRollup) -> Vec<u8> {
    to_json_text(rollup).into_bytes()
}

/// The rollup as its JSON object, written field by field. At a dashboard's
/// live interval an instance encodes more rollups than it decodes events,
/// and `serde_json` spent most of that time writing the keys, escaped byte
/// by byte; here each key is one copy of its bytes, and the text needs no
/// UTF-8 check after.
pub fn to_json_text(rollup: &StreamRollup) -> String {
    // About what it takes (figures ~700 bytes, ~130 a product), so that
    // writing it does not grow the buffer step by step.
    let mut json = String::with_capacity(768 + 160 * rollup.top_products.len());
    write_json(rollup, &mut json);
    json
}

/// Appends `,"key":` (or `"key":` for an object's first) and the value.
macro_rules! field {
    ($out:expr, first $key:literal, $write:ident($value:expr)) => {{
        $out.push_str(concat!("\"", $key, "\":"));
        $write($out, $value);
    }};
    ($out:expr, $key:literal, $write:ident($value:expr)) => {{
        $out.push_str(concat!(",\"", $key, "\":"));
        $write($out, $value);
    }};
}

/// [`to_json_text`], appended to `out`. The fields in `StreamRollup`'s
/// order, with its `serde` attributes: the window's bounds and the products
/// only when present, `is_final` as `final`.
fn write_json(r: &StreamRollup, out: &mut String) {
    out.push('{');
    field!(out, first "kind", string(r.kind.as_str()));
    if let Some(start) = r.window_start {
        field!(out, "window_start", integer(start));
    }
    if let Some(end) = r.window_end {
        field!(out, "window_end", integer(end));
    }
    field!(out, "stream_id", string(&r.stream_id));
    field!(out, "seller_id", optional_string(r.seller_id.as_deref()));
    field!(out, "currency", optional_string(r.currency.as_deref()));
    field!(out, "first_event_ts", integer(r.first_event_ts));
    field!(out, "last_event_ts", integer(r.last_event_ts));
    field!(out, "views", integer(r.views));
    field!(out, "unique_viewers", integer(r.unique_viewers));
    field!(out, "concurrent_viewers", integer(r.concurrent_viewers));
    field!(
        out,
        "peak_concurrent_viewers",
        integer(r.peak_concurrent_viewers)
    );
    field!(out, "impressions", integer(r.impressions));
    field!(out, "clicks", integer(r.clicks));
    field!(out, "add_to_carts", integer(r.add_to_carts));
    field!(out, "likes", integer(r.likes));
    field!(out, "comments", integer(r.comments));
    field!(out, "shares", integer(r.shares));
    field!(out, "follows", integer(r.follows));
    field!(out, "orders", integer(r.orders));
    field!(out, "items_sold", integer(r.items_sold));
    field!(out, "gmv", integer(r.gmv));
    field!(out, "refunds", integer(r.refunds));
    field!(out, "net_gmv", integer(r.net_gmv));
    field!(out, "commission", integer(r.commission));
    field!(out, "unique_buyers", integer(r.unique_buyers));
    field!(out, "ctr", ratio(r.ctr));
    field!(out, "click_to_order_rate", ratio(r.click_to_order_rate));
    field!(out, "conversion_rate", ratio(r.conversion_rate));
    field!(out, "gpm", optional_integer(r.gpm));
    field!(out, "aov", optional_integer(r.aov));
    field!(out, "revision", integer(r.revision));
    field!(out, "final", boolean(r.is_final));
    if !r.top_products.is_empty() {
        out.push_str(",\"top_products\":[");
        for (i, p) in r.top_products.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            field!(out, first "product_id", string(&p.product_id));
            field!(out, "impressions", integer(p.impressions));
            field!(out, "clicks", integer(p.clicks));
            field!(out, "add_to_carts", integer(p.add_to_carts));
            field!(out, "orders", integer(p.orders));
            field!(out, "items_sold", integer(p.items_sold));
            field!(out, "gmv", integer(p.gmv));
            out.push('}');
        }
        out.push(']');
    }
    out.push('}');
}

fn integer(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn optional_integer(out: &mut String, n: Option<i64>) {
    match n {
        Some(n) => integer(out, n),
        None => out.push_str("null"),
    }
}

fn boolean(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

/// A string as `serde_json` writes it: as it is when nothing in it needs
/// escaping (ids nearly always), else by `serde_json` itself.
fn string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Serializing a string cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

fn optional_string(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.push_str("null"),
    }
}

/// A ratio by `serde_json` itself, so that its digits are the same (and a
/// non-finite value `null`, as it writes one).
fn ratio(out: &mut String, r: Option<f64>) {
    // Written on the stack: an `f64` takes at most 24 bytes.
    let mut buffer = [0u8; 32];
    let mut rest = &mut buffer[..];
    let written = serde_json::to_writer(&mut rest, &r).map(|()| 32 - rest.len());
    match written.map(|n| std::str::from_utf8(&buffer[..n])) {
        Ok(Ok(text)) => out.push_str(text),
        _ => out.push_str(&serde_json::to_string(&r).unwrap_or_default()),
    }
}

/// The rollup as its protobuf message.
pub fn to_protobuf(r: &StreamRollup) -> Rollup {
    into_protobuf(r.clone())
}

/// The rollup as its protobuf message, moving its strings.
pub fn into_protobuf(r: StreamRollup) -> Rollup {
    Rollup {
        kind: r.kind.as_str().to_string(),
        window_start: r.window_start,
        window_end: r.window_end,
        stream_id: r.stream_id,
        seller_id: r.seller_id,
        currency: r.currency,
        first_event_ts: r.first_event_ts,
        last_event_ts: r.last_event_ts,
        views: r.views,
        unique_viewers: r.unique_viewers,
        concurrent_viewers: r.concurrent_viewers,
        peak_concurrent_viewers: r.peak_concurrent_viewers,
        impressions: r.impressions,
        clicks: r.clicks,
        add_to_carts: r.add_to_carts,
        likes: r.likes,
        comments: r.comments,
        shares: r.shares,
        follows: r.follows,
        orders: r.orders,
        items_sold: r.items_sold,
        gmv: r.gmv,
        refunds: r.refunds,
        net_gmv: r.net_gmv,
        commission: r.commission,
        unique_buyers: r.unique_buyers,
        ctr: r.ctr,
        click_to_order_rate: r.click_to_order_rate,
        conversion_rate: r.conversion_rate,
        gpm: r.gpm,
        aov: r.aov,
        revision: r.revision,
        r#final: r.is_final,
        top_products: r
            .top_products
            .into_iter()
            .map(|p| ProductFigures {
                product_id: p.product_id,
                impressions: p.impressions,
                clicks: p.clicks,
                add_to_carts: p.add_to_carts,
                orders: p.orders,
                items_sold: p.items_sold,
                gmv: p.gmv,
            })
            .collect(),
    }
}

/// The rollup from its protobuf message.
pub fn from_protobuf(r: Rollup) -> StreamRollup {
    StreamRollup {
        kind: if r.kind == RollupKind::Window.as_str() {
            RollupKind::Window
        } else {
            RollupKind::Cumulative
        },
        window_start: r.window_start,
        window_end: r.window_end,
        stream_id: r.stream_id,
        seller_id: r.seller_id,
        currency: r.currency,
        first_event_ts: r.first_event_ts,
        last_event_ts: r.last_event_ts,
        views: r.views,
        unique_viewers: r.unique_viewers,
        concurrent_viewers: r.concurrent_viewers,
        peak_concurrent_viewers: r.peak_concurrent_viewers,
        impressions: r.impressions,
        clicks: r.clicks,
        add_to_carts: r.add_to_carts,
        likes: r.likes,
        comments: r.comments,
        shares: r.shares,
        follows: r.follows,
        orders: r.orders,
        items_sold: r.items_sold,
        gmv: r.gmv,
        refunds: r.refunds,
        net_gmv: r.net_gmv,
        commission: r.commission,
        unique_buyers: r.unique_buyers,
        ctr: r.ctr,
        click_to_order_rate: r.click_to_order_rate,
        conversion_rate: r.conversion_rate,
        gpm: r.gpm,
        aov: r.aov,
        revision: r.revision,
        is_final: r.r#final,
        top_products: r
            .top_products
            .into_iter()
            .map(|p| ProductRollup {
                product_id: p.product_id,
                impressions: p.impressions,
                clicks: p.clicks,
                add_to_carts: p.add_to_carts,
                orders: p.orders,
                items_sold: p.items_sold,
                gmv: p.gmv,
            })
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Strings with what JSON escapes (quotes, backslashes, control
    /// characters) as well as plain ids and other Unicode.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9-]{0,12}",
            any::<String>(),
            "[\"\\\\\\x00-\\x1f\\x7f a\u{e9}\u{1F6D2}]{0,8}",
        ]
    }

    /// Ratios as computed, and the floats no ratio should be but a
    /// writer must still get right.
    fn ratio() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            (0u64..1_000_000, 1u64..1_000_000).prop_map(|(n, d)| Some(n as f64 / d as f64)),
            any::<f64>().prop_map(Some),
            Just(Some(-0.0)),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
        ]
    }

    fn product() -> impl Strategy<Value = ProductRollup> {
        (text(), any::<[u64; 5]>(), any::<i64>()).prop_map(|(product_id, n, gmv)| ProductRollup {
            product_id,
            impressions: n[0],
            clicks: n[1],
            add_to_carts: n[2],
            orders: n[3],
            items_sold: n[4],
            gmv,
        })
    }

    /// Arbitrary rollups, derived figures included (rarely what the counts give).
    pub(crate) fn rollup() -> impl Strategy<Value = StreamRollup> {
        (
            (any::<bool>(), any::<Option<i64>>(), any::<Option<i64>>()),
            (text(), prop::option::of(text()), prop::option::of(text())),
            (any::<[i64; 2]>(), any::<[u64; 16]>(), any::<[i64; 4]>()),
            (ratio(), ratio(), ratio(), any::<[Option<i64>; 2]>()),
            (any::<bool>(), prop::collection::vec(product(), 0..12)),
        )
            .prop_map(|(window, ids, numbers, ratios, end)| {
                let (is_window, window_start, window_end) = window;
                let (stream_id, seller_id, currency) = ids;
                let (ts, n, money) = numbers;
                let (ctr, click_to_order_rate, conversion_rate, [gpm, aov]) = ratios;
                let (is_final, top_products) = end;
                StreamRollup {
                    kind: if is_window {
                        RollupKind::Window
                    } else {
                        RollupKind::Cumulative
                    },
                    window_start,
                    window_end,
                    stream_id,
                    seller_id,
                    currency,
                    first_event_ts: ts[0],
                    last_event_ts: ts[1],
                    views: n[0],
                    unique_viewers: n[1],
                    concurrent_viewers: n[2],
                    peak_concurrent_viewers: n[3],
                    impressions: n[4],
                    clicks: n[5],
                    add_to_carts: n[6],
                    likes: n[7],
                    comments: n[8],
                    shares: n[9],
                    follows: n[10],
                    orders: n[11],
                    items_sold: n[12],
                    gmv: money[0],
                    refunds: money[1],
                    net_gmv: money[2],
                    commission: money[3],
                    unique_buyers: n[13],
                    ctr,
                    click_to_order_rate,
                    conversion_rate,
                    gpm,
                    aov,
                    revision: n[14],
                    is_final,
                    top_products,
                }
            })
    }

    proptest! {
        #[test]
        fn json_is_what_serde_json_writes(rollup in rollup()) {
            let json = to_json(&rollup);
            prop_assert_eq!(
                String::from_utf8(json).unwrap(),
                serde_json::to_string(&rollup).unwrap()
            );
        }
    }

    #[test]
    fn both_formats_round_trip() {
        let rollup = StreamRollup {
            kind: RollupKind::Window,
            window_start: Some(60_000),
            window_end: Some(120_000),
            stream_id: "live-1".into(),
            seller_id: Some("shop".into()),
            currency: Some("JPY".into()),
            first_event_ts: 60_001,
            last_event_ts: 119_999,
            views: 3,
            unique_viewers: 2,
            concurrent_viewers: 1,
            peak_concurrent_viewers: 2,
            impressions: 10,
            clicks: 4,
            add_to_carts: 2,
            likes: 1,
            comments: 0,
            shares: 0,
            follows: 1,
            orders: 1,
            items_sold: 2,
            gmv: 2400,
            refunds: 0,
            net_gmv: 2400,
            commission: 240,
            unique_buyers: 1,
            ctr: Some(0.4),
            click_to_order_rate: Some(0.25),
            conversion_rate: Some(0.5),
            gpm: Some(800_000),
            aov: Some(2400),
            revision: 7,
            is_final: false,
            top_products: vec![ProductRollup {
                product_id: "p".into(),
                impressions: 10,
                clicks: 4,
                add_to_carts: 2,
                orders: 1,
                items_sold: 2,
                gmv: 2400,
            }],
        };
        for format in [RollupFormat::Json, RollupFormat::Protobuf] {
            assert_eq!(
                format.decode(&format.encode(&rollup)).unwrap(),
                rollup,
                "{format:?}"
            );
        }
        let json: serde_json::Value =
            serde_json::from_slice(&RollupFormat::Json.encode(&rollup)).unwrap();
        assert_eq!(json["kind"], "window");
        assert_eq!(json["final"], false);
        assert!(json["ctr"].is_f64());
        assert_eq!(
            RollupFormat::from_content_type(Some(b"application/x-protobuf")),
            RollupFormat::Protobuf
        );
        assert_eq!(RollupFormat::from_content_type(None), RollupFormat::Json);
    }
}
