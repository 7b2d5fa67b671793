//! Request signing: `hex(HMAC-SHA256(secret, appid + body + time))`, the original's scheme, with
//! constant-time verification and the time-window check. Free of HTTP types so the server's
//! extractor and the blocking client call the same functions.

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

/// How far a request's time may be from the server's clock, either way.
pub const TIME_WINDOW_SECS: i64 = 5 * 60;
/// The original's time layout (Go `2006-01-02 15:04:05`), read in the server's local zone.
pub const LEGACY_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Why a signature or its time was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignError {
    /// The signature header is not 64 lowercase or uppercase hex digits.
    #[error("signature is not 64 hex digits")]
    BadHex,
    /// The signature does not match the body under the agent's secret.
    #[error("signature does not match")]
    Mismatch,
    /// The time header is neither `YYYY-MM-DD HH:MM:SS` nor Unix seconds.
    #[error("time {0:?} is neither YYYY-MM-DD HH:MM:SS nor Unix seconds")]
    BadTime(String),
    /// The time is outside the accepted window around the server's clock.
    #[error("time {sent:?} is {skew_secs} s away from the server's time {server_time}; the limit is 300 s")]
    Skew {
        /// The header as sent.
        sent: String,
        /// Signed distance, request minus server.
        skew_secs: i64,
        /// The server's time, RFC 3339.
        server_time: String,
    },
}

/// A secret that signs and verifies requests. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

impl Signer {
    /// A signer keyed with `secret`.
    pub fn new(secret: &str) -> Self {
        Signer { key: secret.as_bytes().to_vec() }
    }

    fn mac(&self, app_id: &str, body: &[u8], time: &str) -> Hmac<Sha256> {
        // new_from_slice accepts keys of any length for HMAC, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(app_id.as_bytes());
        mac.update(body);
        mac.update(time.as_bytes());
        mac
    }

    /// The lowercase hex signature of a request.
    ///
    /// ```
    /// let s = orange::protocol::Signer::new("orange-forge");
    /// let sig = s.sign("w1", b"ping", "2026-11-26 06:40:41");
    /// assert!(s.verify("w1", b"ping", "2026-11-26 06:40:41", &sig).is_ok());
    /// assert!(s.verify("w1", b"pong", "2026-11-26 06:40:41", &sig).is_err());
    /// ```
    pub fn sign(&self, app_id: &str, body: &[u8], time: &str) -> String {
        hex::encode(self.mac(app_id, body, time).finalize().into_bytes())
    }

    /// Checks `signature` in constant time.
    pub fn verify(&self, app_id: &str, body: &[u8], time: &str, signature: &str) -> Result<(), SignError> {
        if signature.len() != 64 {
            return Err(SignError::BadHex);
        }
        let raw = hex::decode(signature).map_err(|_| SignError::BadHex)?;
        self.mac(app_id, body, time).verify_slice(&raw).map_err(|_| SignError::Mismatch)
    }
}

/// The time header orange agents send: Unix seconds, which no zone can make ambiguous.
pub fn time_header(now: DateTime<Utc>) -> String {
    now.timestamp().to_string()
}

/// The time header the original client sends: local wall-clock time without a zone.
pub fn legacy_time_header(now: DateTime<Utc>) -> String {
    now.with_timezone(&Local).format(LEGACY_TIME_FORMAT).to_string()
}

/// Parses a time header, Unix seconds or the legacy local layout, into Unix seconds.
pub fn parse_time(header: &str) -> Result<i64, SignError> {
    let bad = || SignError::BadTime(header.chars().take(64).collect());
    if !header.is_empty() && header.len() <= 12 && header.bytes().all(|b| b.is_ascii_digit()) {
        return header.parse().map_err(|_| bad());
    }
    let naive = NaiveDateTime::parse_from_str(header, LEGACY_TIME_FORMAT).map_err(|_| bad())?;
    // A local time that a DST change makes ambiguous takes the earlier instant; one that does
    // not exist (skipped by DST) is refused.
    let local = Local.from_local_datetime(&naive).earliest().ok_or_else(bad)?;
    Ok(local.timestamp())
}

/// Checks that a time header is within [`TIME_WINDOW_SECS`] of `now`.
pub fn check_time(header: &str, now: DateTime<Utc>) -> Result<(), SignError> {
    let sent = parse_time(header)?;
    let skew_secs = sent - now.timestamp();
    if skew_secs.abs() > TIME_WINDOW_SECS {
        return Err(SignError::Skew {
            sent: header.chars().take(64).collect(),
            skew_secs,
            server_time: now.to_rfc3339(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answer computed independently with
    /// `printf 'w1ping2026-11-26 06:40:41' | openssl dgst -sha256 -hmac s3cret`.
    #[test]
    fn known_answer() {
        let sig = Signer::new("s3cret").sign("w1", b"ping", "2026-11-26 06:40:41");
        assert_eq!(sig, KNOWN_SIG);
    }

    const KNOWN_SIG: &str = "a74f3f365d90b8e5639a88c6742b55ba24a2872af2f4161e9908bb5b4d7f8f9b";

    #[test]
    fn verify_rejects_wrong_length_bad_hex_and_wrong_secret() {
        let s = Signer::new("a");
        let sig = s.sign("id", b"body", "1");
        assert_eq!(s.verify("id", b"body", "1", &sig[..62]), Err(SignError::BadHex));
        let not_hex = "z".repeat(64);
        assert_eq!(s.verify("id", b"body", "1", &not_hex), Err(SignError::BadHex));
        assert_eq!(Signer::new("b").verify("id", b"body", "1", &sig), Err(SignError::Mismatch));
        assert!(s.verify("id", b"body", "1", &sig.to_uppercase()).is_ok());
    }

    #[test]
    fn time_in_both_layouts_is_checked_against_the_window() {
        let now = Utc::now();
        assert!(check_time(&time_header(now), now).is_ok());
        assert!(check_time(&legacy_time_header(now), now).is_ok());
        let old = now - chrono::Duration::seconds(301);
        assert!(matches!(check_time(&time_header(old), now), Err(SignError::Skew { .. })));
        assert!(matches!(check_time("yesterday", now), Err(SignError::BadTime(_))));
        assert!(matches!(check_time("", now), Err(SignError::BadTime(_))));
    }
}
