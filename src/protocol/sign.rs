//! Request signing, free of HTTP types so the server's extractor and the blocking client call
//! the same functions.
//!
//! - Legacy (the original's scheme): `hex(HMAC-SHA256(secret, appid + body + time))`, time in
//!   the server's local zone to the second. Kept for original clients.
//! - Version 2 (orange agents, announced by `X-ORANGE-SIGN-VERSION: 2`): the HMAC covers a
//!   canonical text binding the method, the path, the app id, the time in Unix seconds, a random
//!   nonce and the SHA-256 of the body, so a signature is valid for one request only.
//!
//! Both are verified in constant time, and the time must be within [`TIME_WINDOW_SECS`].

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
    /// The nonce header is not 32 hex digits.
    #[error("nonce must be 32 hex digits")]
    BadNonce,
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

/// Value of the version header announcing the canonical scheme.
pub const SIGN_VERSION_2: &str = "2";
/// Length of a version-2 nonce in hex digits (128 random bits).
pub const NONCE_HEX_LEN: usize = 32;

/// The parts of a request a version-2 signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Canonical<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Request path, e.g. `/orange-forge/api/getTask`.
    pub path: &'a str,
    /// The agent's app id.
    pub app_id: &'a str,
    /// Unix seconds, as sent in the time header.
    pub time: &'a str,
    /// Random hex nonce, as sent in the nonce header.
    pub nonce: &'a str,
    /// The exact body bytes.
    pub body: &'a [u8],
}

impl Canonical<'_> {
    /// The signed text: `orange-v2`, method, path, app id, time, nonce and the body's SHA-256
    /// in hex, each on its own line.
    pub fn text(&self) -> String {
        use sha2::Digest;
        let body_hash = hex::encode(Sha256::digest(self.body));
        format!(
            "orange-v2\n{}\n{}\n{}\n{}\n{}\n{body_hash}",
            self.method, self.path, self.app_id, self.time, self.nonce
        )
    }
}

/// A fresh random nonce for a version-2 request.
pub fn new_nonce() -> String {
    let mut raw = [0u8; NONCE_HEX_LEN / 2];
    // The OS random source does not fail on supported platforms; a zero nonce would only make
    // the request look like a replay and be refused, never accepted wrongly.
    let _ = getrandom::fill(&mut raw);
    hex::encode(raw)
}

/// Checks a nonce header: exactly [`NONCE_HEX_LEN`] hex digits.
pub fn check_nonce(nonce: &str) -> Result<(), SignError> {
    if nonce.len() == NONCE_HEX_LEN && nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(SignError::BadNonce)
    }
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

    /// Checks a legacy `signature` in constant time.
    pub fn verify(&self, app_id: &str, body: &[u8], time: &str, signature: &str) -> Result<(), SignError> {
        verify_mac(self.mac(app_id, body, time), signature)
    }

    fn mac_v2(&self, request: &Canonical<'_>) -> Hmac<Sha256> {
        // new_from_slice accepts keys of any length for HMAC, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(request.text().as_bytes());
        mac
    }

    /// The lowercase hex version-2 signature of a request.
    pub fn sign_v2(&self, request: &Canonical<'_>) -> String {
        hex::encode(self.mac_v2(request).finalize().into_bytes())
    }

    /// Checks a version-2 `signature` in constant time.
    pub fn verify_v2(&self, request: &Canonical<'_>, signature: &str) -> Result<(), SignError> {
        verify_mac(self.mac_v2(request), signature)
    }
}

fn verify_mac(mac: Hmac<Sha256>, signature: &str) -> Result<(), SignError> {
    if signature.len() != 64 {
        return Err(SignError::BadHex);
    }
    let raw = hex::decode(signature).map_err(|_| SignError::BadHex)?;
    mac.verify_slice(&raw).map_err(|_| SignError::Mismatch)
}

impl Signer {}

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

    /// Known answer computed independently with
    /// `printf 'orange-v2\nPOST\n/orange-forge/api/ping\nw1\n1795677383\n000102030405060708090a0b0c0d0e0f\n'"$(printf ping | sha256sum | cut -d' ' -f1)" | openssl dgst -sha256 -hmac s3cret`.
    #[test]
    fn known_answer_v2() {
        let request = Canonical {
            method: "POST",
            path: "/orange-forge/api/ping",
            app_id: "w1",
            time: "1795677383",
            nonce: "000102030405060708090a0b0c0d0e0f",
            body: b"ping",
        };
        let signer = Signer::new("s3cret");
        assert_eq!(signer.sign_v2(&request), KNOWN_SIG_V2);
        assert!(signer.verify_v2(&request, KNOWN_SIG_V2).is_ok());
        let other_path = Canonical { path: "/orange-forge/api/getTask", ..request };
        assert_eq!(signer.verify_v2(&other_path, KNOWN_SIG_V2), Err(SignError::Mismatch));
        let other_nonce = Canonical { nonce: "ffffffffffffffffffffffffffffffff", ..request };
        assert_eq!(signer.verify_v2(&other_nonce, KNOWN_SIG_V2), Err(SignError::Mismatch));
    }

    const KNOWN_SIG_V2: &str = "7677333806db2c5a44ed2ac5cfd1b7b2dfb04fb2ac78ed42f837ac98187f1c30";

    #[test]
    fn nonces_are_fresh_and_checked() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert!(check_nonce(&a).is_ok());
        assert_eq!(check_nonce("abc"), Err(SignError::BadNonce));
        assert_eq!(check_nonce(&"g".repeat(32)), Err(SignError::BadNonce));
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
