//! Why an event is invalid: the contract's closed set of reasons.

/// The reason a record is invalid. Closed set: adding one is a contract change
/// (it becomes a label value of `livetally_events_invalid_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum InvalidReason {
    /// Not JSON, not protobuf, or not UTF-8.
    #[error("malformed")]
    Malformed,
    /// A field the event's type requires is absent (or JSON `null`).
    #[error("missing_field")]
    MissingField,
    /// `type` is not one of the contract's event types.
    #[error("unknown_type")]
    UnknownType,
    /// A field is present but out of range: zero or negative quantity, negative
    /// price, bad currency code, empty or over-long id, wrong JSON type.
    #[error("bad_value")]
    BadValue,
    /// `ts` is unparsable, or (live) too far ahead of the wall clock.
    #[error("bad_timestamp")]
    BadTimestamp,
    /// The record is larger than the configured maximum.
    #[error("too_large")]
    TooLarge,
    /// A purchase or refund in another currency than the stream's.
    #[error("currency_mismatch")]
    CurrencyMismatch,
}

impl InvalidReason {
    /// Every reason, for pre-registering metric label values and summaries.
    pub const ALL: [InvalidReason; 7] = [
        InvalidReason::Malformed,
        InvalidReason::MissingField,
        InvalidReason::UnknownType,
        InvalidReason::BadValue,
        InvalidReason::BadTimestamp,
        InvalidReason::TooLarge,
        InvalidReason::CurrencyMismatch,
    ];

    /// The label value, as written in dead-letter headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Malformed => "malformed",
            InvalidReason::MissingField => "missing_field",
            InvalidReason::UnknownType => "unknown_type",
            InvalidReason::BadValue => "bad_value",
            InvalidReason::BadTimestamp => "bad_timestamp",
            InvalidReason::TooLarge => "too_large",
            InvalidReason::CurrencyMismatch => "currency_mismatch",
        }
    }
}
