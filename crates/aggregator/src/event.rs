//! A validated viewer event, as the aggregator receives it.
//!
//! Decoding and validation live in `livetally-ingest`; by the time an
//! [`Event`] exists, every field the contract requires for its type is present
//! and in range. Strings are borrowed from the record where possible.

use std::borrow::Cow;
use std::fmt;

/// Event time: epoch milliseconds.
pub type EventTime = i64;

/// An ISO 4217 currency code, three capital ASCII letters.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Currency(pub [u8; 3]);

impl Currency {
    /// The code as text (always ASCII, so this cannot fail).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event types of the contract, by their wire names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The viewer entered the live room.
    View,
    /// The viewer left the live room.
    Leave,
    /// A product card was shown.
    Impression,
    /// A product card was clicked.
    Click,
    /// A product was put in the cart.
    AddToCart,
    /// One order line was bought.
    Purchase,
    /// One order line was refunded.
    Refund,
    /// Engagement: a like.
    Like,
    /// Engagement: a comment.
    Comment,
    /// Engagement: a share.
    Share,
    /// Engagement: a follow.
    Follow,
}

impl EventType {
    /// Every type, in wire order.
    pub const ALL: [EventType; 11] = [
        EventType::View,
        EventType::Leave,
        EventType::Impression,
        EventType::Click,
        EventType::AddToCart,
        EventType::Purchase,
        EventType::Refund,
        EventType::Like,
        EventType::Comment,
        EventType::Share,
        EventType::Follow,
    ];

    /// The wire name (`"add_to_cart"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Leave => "leave",
            EventType::Impression => "impression",
            EventType::Click => "click",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
            EventType::Refund => "refund",
            EventType::Like => "like",
            EventType::Comment => "comment",
            EventType::Share => "share",
            EventType::Follow => "follow",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn from_wire(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// One order line of a purchase or refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine<'a> {
    /// The product bought or refunded.
    pub product_id: Cow<'a, str>,
    /// The order this line belongs to; one order may hold several lines.
    pub order_id: Cow<'a, str>,
    /// Units, at least 1.
    pub quantity: u32,
    /// Price of one unit in minor currency units, at least 0.
    pub unit_price: i64,
    /// The currency of `unit_price`.
    pub currency: Currency,
}

impl OrderLine<'_> {
    /// `quantity × unit_price`, in minor units. Validation bounds both factors
    /// so this cannot overflow.
    pub fn amount(&self) -> i64 {
        i64::from(self.quantity) * self.unit_price
    }
}

/// What the viewer did, with the fields that type requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// The viewer entered the live room.
    View,
    /// The viewer left the live room.
    Leave,
    /// A product card was shown.
    Impression {
        /// The product shown.
        product_id: Cow<'a, str>,
    },
    /// A product card was clicked.
    Click {
        /// The product clicked.
        product_id: Cow<'a, str>,
    },
    /// A product was put in the cart.
    AddToCart {
        /// The product put in the cart.
        product_id: Cow<'a, str>,
    },
    /// An order line was bought.
    Purchase(OrderLine<'a>),
    /// An order line was refunded.
    Refund(OrderLine<'a>),
    /// Engagement: a like.
    Like,
    /// Engagement: a comment.
    Comment,
    /// Engagement: a share.
    Share,
    /// Engagement: a follow.
    Follow,
}

impl Action<'_> {
    /// The type of this action.
    pub fn event_type(&self) -> EventType {
        match self {
            Action::View => EventType::View,
            Action::Leave => EventType::Leave,
            Action::Impression { .. } => EventType::Impression,
            Action::Click { .. } => EventType::Click,
            Action::AddToCart { .. } => EventType::AddToCart,
            Action::Purchase(_) => EventType::Purchase,
            Action::Refund(_) => EventType::Refund,
            Action::Like => EventType::Like,
            Action::Comment => EventType::Comment,
            Action::Share => EventType::Share,
            Action::Follow => EventType::Follow,
        }
    }
}

/// A valid viewer event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// Producer-assigned id; (`stream_id`, `event_id`) identifies the event.
    pub event_id: Cow<'a, str>,
    /// The live stream (room) the event belongs to; the Kafka key.
    pub stream_id: Cow<'a, str>,
    /// The viewer who acted.
    pub viewer_id: Cow<'a, str>,
    /// Event time, epoch milliseconds.
    pub ts: EventTime,
    /// The seller, when the producer knows it.
    pub seller_id: Option<Cow<'a, str>>,
    /// What happened.
    pub action: Action<'a>,
}

impl Event<'_> {
    /// A copy that owns its strings, for keeping beyond the record's buffer.
    pub fn into_owned(self) -> Event<'static> {
        fn own(s: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(s.into_owned())
        }
        fn own_line(l: OrderLine<'_>) -> OrderLine<'static> {
            OrderLine {
                product_id: own(l.product_id),
                order_id: own(l.order_id),
                quantity: l.quantity,
                unit_price: l.unit_price,
                currency: l.currency,
            }
        }
        Event {
            event_id: own(self.event_id),
            stream_id: own(self.stream_id),
            viewer_id: own(self.viewer_id),
            ts: self.ts,
            seller_id: self.seller_id.map(own),
            action: match self.action {
                Action::View => Action::View,
                Action::Leave => Action::Leave,
                Action::Impression { product_id } => Action::Impression {
                    product_id: own(product_id),
                },
                Action::Click { product_id } => Action::Click {
                    product_id: own(product_id),
                },
                Action::AddToCart { product_id } => Action::AddToCart {
                    product_id: own(product_id),
                },
                Action::Purchase(l) => Action::Purchase(own_line(l)),
                Action::Refund(l) => Action::Refund(own_line(l)),
                Action::Like => Action::Like,
                Action::Comment => Action::Comment,
                Action::Share => Action::Share,
                Action::Follow => Action::Follow,
            },
        }
    }
}
