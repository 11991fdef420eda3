//! What the aggregator publishes: a stream's figures at one moment.
//!
//! These are plain values, built from the state by its single owner and handed
//! to readers (rollup topic, HTTP, SSE) as snapshots.

use serde::{Deserialize, Serialize};

use crate::event::EventTime;

/// Whether a rollup covers the stream since its first event or one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollupKind {
    /// Since the stream's first event.
    Cumulative,
    /// One tumbling event-time window `[window_start, window_end)`.
    Window,
}

impl RollupKind {
    /// Its name on the wire, as `"kind"` (JSON and protobuf).
    pub fn as_str(self) -> &'static str {
        match self {
            RollupKind::Cumulative => "cumulative",
            RollupKind::Window => "window",
        }
    }
}

/// The figures of one stream, cumulative or for one window (spec §2, §3).
///
/// Money is in minor units of `currency`, never a float. Ratios are `None`
/// (JSON `null`) when their denominator is zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamRollup {
    /// Cumulative or window.
    pub kind: RollupKind,
    /// Window start, epoch ms (windows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<EventTime>,
    /// Window end, exclusive, epoch ms (windows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<EventTime>,
    /// The stream.
    pub stream_id: String,
    /// The stream's seller: the first `seller_id` seen on it.
    pub seller_id: Option<String>,
    /// The stream's currency: that of its first purchase or refund.
    pub currency: Option<String>,
    /// Smallest event time counted.
    pub first_event_ts: EventTime,
    /// Largest event time counted.
    pub last_event_ts: EventTime,
    /// Count of `view` events.
    pub views: u64,
    /// Distinct `viewer_id` over `view` events.
    pub unique_viewers: u64,
    /// Viewers whose latest presence event (by `ts`) is a `view`.
    pub concurrent_viewers: u64,
    /// Highest `concurrent_viewers` seen.
    pub peak_concurrent_viewers: u64,
    /// Count of `impression` events.
    pub impressions: u64,
    /// Count of `click` events.
    pub clicks: u64,
    /// Count of `add_to_cart` events.
    pub add_to_carts: u64,
    /// Count of `like` events.
    pub likes: u64,
    /// Count of `comment` events.
    pub comments: u64,
    /// Count of `share` events.
    pub shares: u64,
    /// Count of `follow` events.
    pub follows: u64,
    /// Distinct `order_id` over `purchase` events.
    pub orders: u64,
    /// Sum of `quantity` over `purchase` events.
    pub items_sold: u64,
    /// Sum of `quantity × unit_price` over `purchase` events.
    pub gmv: i64,
    /// Sum of `quantity × unit_price` over `refund` events.
    pub refunds: i64,
    /// `gmv − refunds`.
    pub net_gmv: i64,
    /// `net_gmv × commission rate`, rounded half away from zero.
    pub commission: i64,
    /// Distinct `viewer_id` over `purchase` events.
    pub unique_buyers: u64,
    /// `clicks / impressions`.
    pub ctr: Option<f64>,
    /// `orders / clicks`.
    pub click_to_order_rate: Option<f64>,
    /// `unique_buyers / unique_viewers`.
    pub conversion_rate: Option<f64>,
    /// `gmv × 1000 / views`, rounded half away from zero.
    pub gpm: Option<i64>,
    /// `gmv / orders`, rounded half away from zero.
    pub aov: Option<i64>,
    /// Increases with every publication of this key (and window).
    pub revision: u64,
    /// The stream has ended (idle past its timeout) and this is its last state.
    #[serde(default, rename = "final")]
    pub is_final: bool,
    /// The stream's best-selling products by GMV (cumulative rollups only, at
    /// most [`TOP_PRODUCTS`]), so that any reader of the rollup topic can show them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_products: Vec<ProductRollup>,
}

/// The figures a rollup derives from its others (spec §2): `net_gmv` and
/// the ratios. One definition for the aggregator, which fills them in, and
/// for a reader that keeps rollups without them and works them out again.
#[derive(Clone, Copy, Debug)]
pub struct Derived {
    /// `gmv − refunds`, saturating.
    pub net_gmv: i64,
    /// `clicks / impressions`.
    pub ctr: Option<f64>,
    /// `orders / clicks`.
    pub click_to_order_rate: Option<f64>,
    /// `unique_buyers / unique_viewers`.
    pub conversion_rate: Option<f64>,
    /// `gmv × 1000 / views`, rounded half away from zero.
    pub gpm: Option<i64>,
    /// `gmv / orders`, rounded half away from zero.
    pub aov: Option<i64>,
}

impl Derived {
    /// The derived figures of `rollup`'s counts and money.
    pub fn of(rollup: &StreamRollup) -> Derived {
        Derived {
            net_gmv: rollup.gmv.saturating_sub(rollup.refunds),
            ctr: ratio(rollup.clicks, rollup.impressions),
            click_to_order_rate: ratio(rollup.orders, rollup.clicks),
            conversion_rate: ratio(rollup.unique_buyers, rollup.unique_viewers),
            gpm: money_ratio(i128::from(rollup.gmv) * 1000, rollup.views),
            aov: money_ratio(i128::from(rollup.gmv), rollup.orders),
        }
    }

    /// Sets them in `rollup`.
    pub fn set(self, rollup: &mut StreamRollup) {
        rollup.net_gmv = self.net_gmv;
        rollup.ctr = self.ctr;
        rollup.click_to_order_rate = self.click_to_order_rate;
        rollup.conversion_rate = self.conversion_rate;
        rollup.gpm = self.gpm;
        rollup.aov = self.aov;
    }

    /// Whether `rollup` holds exactly these, bit for bit.
    pub fn are_in(&self, rollup: &StreamRollup) -> bool {
        let bits = |r: Option<f64>| r.map(f64::to_bits);
        self.net_gmv == rollup.net_gmv
            && bits(self.ctr) == bits(rollup.ctr)
            && bits(self.click_to_order_rate) == bits(rollup.click_to_order_rate)
            && bits(self.conversion_rate) == bits(rollup.conversion_rate)
            && self.gpm == rollup.gpm
            && self.aov == rollup.aov
    }
}

/// `numerator / denominator` as an f64; `None` (JSON `null`) for a zero denominator.
fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator != 0).then(|| numerator as f64 / denominator as f64)
}

/// A money ratio in minor units, rounded half away from zero, saturating at
/// the bounds of `i64`; `None` for a zero denominator.
fn money_ratio(numerator: i128, denominator: u64) -> Option<i64> {
    let rounded = crate::commission::div_round(numerator, i128::from(denominator))?;
    Some(i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX }))
}

/// How many products a cumulative rollup carries.
pub const TOP_PRODUCTS: usize = 10;

/// The figures of one product within one stream (spec §2), all exact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRollup {
    /// The product.
    pub product_id: String,
    /// Count of `impression` events for it.
    pub impressions: u64,
    /// Count of `click` events for it.
    pub clicks: u64,
    /// Count of `add_to_cart` events for it.
    pub add_to_carts: u64,
    /// Distinct `order_id` over its `purchase` events.
    pub orders: u64,
    /// Sum of `quantity` over its `purchase` events.
    pub items_sold: u64,
    /// Sum of `quantity × unit_price` over its `purchase` events.
    pub gmv: i64,
}
