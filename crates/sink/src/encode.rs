//! Rollups on the wire: JSON (default) or `livetally.v1.Rollup` protobuf.

use livetally_aggregator::{RollupKind, StreamRollup};
use livetally_proto::v1::Rollup;
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
    // Serializing a plain struct of numbers, strings and options cannot fail.
    serde_json::to_vec(rollup).unwrap_or_default()
}

/// The rollup as its protobuf message.
pub fn to_protobuf(r: &StreamRollup) -> Rollup {
    Rollup {
        kind: match r.kind {
            RollupKind::Cumulative => "cumulative",
            RollupKind::Window => "window",
        }
        .to_string(),
        window_start: r.window_start,
        window_end: r.window_end,
        stream_id: r.stream_id.clone(),
        seller_id: r.seller_id.clone(),
        currency: r.currency.clone(),
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
    }
}
