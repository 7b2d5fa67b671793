//! Overload on the wire: a server too busy to take an agent's request answers HTTP 429 with a
//! `Retry-After` header (seconds), and the agent waits at least that long before it tries again.
//! Original clients never see a 429 on getTask (they exit on anything but code 0 or 2): the server
//! holds their poll for the Retry-After time and answers "no task".

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The standard header naming how long to wait before the next request.
pub const HEADER_RETRY_AFTER: &str = "Retry-After";
/// Longest wait an agent takes from a `Retry-After` header; a larger value is cut to this, so a
/// wrong server cannot park a fleet for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Start of the message of a 429 envelope.
pub const BUSY_MESSAGE: &str = "server busy";

/// Parses a `Retry-After` value at `now`: delta-seconds (`120`) or an HTTP date (`Wed, 21 Oct
/// 2015 07:28:00 GMT`, a past date reads as 0), capped at [`MAX_RETRY_AFTER`]. `None` when it is
/// neither.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || value.len() > 64 {
        return None;
    }
    let delay = if value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too many for a u64: far beyond the cap anyway.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn seconds_and_dates_parse() {
        assert_eq!(parse_retry_after("3", now()), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now()), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()), Some(Duration::ZERO));
    }

    #[test]
    fn large_values_are_capped_and_garbage_is_none() {
        assert_eq!(parse_retry_after("86400", now()), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("99999999999999999999999", now()), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("1.5", now()), None);
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after(&"9".repeat(100), now()), None);
    }
}
