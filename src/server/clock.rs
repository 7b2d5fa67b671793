//! Time as the server reckons it: Unix milliseconds in records, RFC 3339 in the operator API.

use std::time::Duration;

use chrono::{TimeZone, Utc};

/// The current time as Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Unix milliseconds as RFC 3339 in UTC, to the millisecond (as the operator API shows times).
pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Unix milliseconds as an RFC 3339 UTC time to the second, for messages.
pub fn rfc3339_secs(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A duration in milliseconds, saturated at what an `i64` holds.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
