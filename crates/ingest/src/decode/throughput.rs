//! A rough single-core throughput check, not a benchmark and never asserted.
//! Run it with:
//! `cargo test --release -p livetally-ingest -- --ignored --nocapture throughput`

use std::hint::black_box;
use std::time::Instant;

use livetally_aggregator::Event;

use super::{decode, DecodeConfig};
use crate::encode::{to_json, to_protobuf};

/// What a plain `#[derive(Deserialize)]` decoder would read, unvalidated.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct DerivedEvent {
    event_id: String,
    #[serde(rename = "type")]
    ty: String,
    stream_id: String,
    viewer_id: String,
    ts: i64,
    seller_id: Option<String>,
    product_id: Option<String>,
    order_id: Option<String>,
    quantity: Option<u32>,
    unit_price: Option<i64>,
    currency: Option<String>,
}

/// The same with borrowed strings (which fails on escapes).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct BorrowedDerivedEvent<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    stream_id: &'a str,
    viewer_id: &'a str,
    ts: i64,
    seller_id: Option<&'a str>,
    product_id: Option<&'a str>,
    order_id: Option<&'a str>,
    quantity: Option<u32>,
    unit_price: Option<i64>,
    currency: Option<&'a str>,
}

const N: u32 = 1_000_000;

fn measure(name: &str, payload_len: usize, mut decode_one: impl FnMut() -> bool) {
    for _ in 0..N / 10 {
        assert!(black_box(decode_one()));
    }
    let start = Instant::now();
    for _ in 0..N {
        black_box(decode_one());
    }
    let elapsed = start.elapsed();
    let ns = elapsed.as_nanos() as f64 / f64::from(N);
    println!(
        "{name:<44} {payload_len:>4} B  {:>6.2} M events/s  {ns:>6.0} ns/event",
        1e3 / ns
    );
}

#[test]
#[ignore = "timing; run in release with --nocapture"]
fn throughput() {
    let purchase = br#"{"event_id":"9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b","type":"purchase","stream_id":"live-42","viewer_id":"u-7","ts":1764120000123,"seller_id":"shop-3","product_id":"sku-9","order_id":"o-55","quantity":2,"unit_price":1999,"currency":"USD"}"#;
    let view = br#"{"event_id":"3e4b5a69-7b8a-9b0c-1d2e-3f4a5b9f1c2d","type":"view","stream_id":"live-42","viewer_id":"u-1234567","ts":1764120000123,"seller_id":"shop-3"}"#;
    let config = DecodeConfig::default();
    let event: Event<'static> = decode(purchase, None, None, &config)
        .map(Event::into_owned)
        .unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(to_json(&event).len(), purchase.len());
    let proto = to_protobuf(&event);
    let ct = Some(&b"application/json"[..]);

    measure("json purchase: decode (validated)", purchase.len(), || {
        decode(purchase, ct, Some(1_764_120_000_000), &config).is_ok()
    });
    measure(
        "json purchase: derive, String fields",
        purchase.len(),
        || serde_json::from_slice::<DerivedEvent>(purchase).is_ok(),
    );
    measure("json purchase: derive, &str fields", purchase.len(), || {
        serde_json::from_slice::<BorrowedDerivedEvent<'_>>(purchase).is_ok()
    });
    measure("json view: decode (validated, sniffed)", view.len(), || {
        decode(view, None, None, &config).is_ok()
    });
    measure("json view: derive, String fields", view.len(), || {
        serde_json::from_slice::<DerivedEvent>(view).is_ok()
    });
    measure("protobuf purchase: decode (validated)", proto.len(), || {
        decode(&proto, None, None, &config).is_ok()
    });
    let mut out = Vec::with_capacity(256);
    measure("encode json purchase (write_json)", purchase.len(), || {
        out.clear();
        crate::encode::write_json(&event, &mut out);
        !out.is_empty()
    });
    measure(
        "encode protobuf purchase (write_protobuf)",
        proto.len(),
        || {
            out.clear();
            crate::encode::write_protobuf(&event, &mut out);
            !out.is_empty()
        },
    );
}
