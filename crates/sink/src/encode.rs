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

/// The rollup as its JSON object.
pub fn to_json(rollup: &StreamRollup) -> Vec<u8> {
    // About what it takes (figures ~700 bytes, ~130 a product), so that
    // writing it does not grow the buffer step by step.
    let mut json = Vec::with_capacity(768 + 160 * rollup.top_products.len());
    // Serializing a plain struct of numbers, strings and options cannot fail.
    let _ = serde_json::to_writer(&mut json, rollup);
    json
}

/// The rollup as its protobuf message.
pub fn to_protobuf(r: &StreamRollup) -> Rollup {
    into_protobuf(r.clone())
}

/// The rollup as its protobuf message, moving its strings.
pub fn into_protobuf(r: StreamRollup) -> Rollup {
    Rollup {
        kind: match r.kind {
            RollupKind::Cumulative => "cumulative",
            RollupKind::Window => "window",
        }
        .to_string(),
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
        kind: if r.kind == "window" {
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
mod tests {
    use super::*;

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
