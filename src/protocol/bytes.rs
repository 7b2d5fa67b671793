//! Output bytes in JSON. A process writes bytes, not text: wherever output crosses JSON (an
//! agent's chunks and reports, the operator API, `--json`), a field holds the bytes as text when
//! they are valid UTF-8, and as base64 when they are not, with a sibling field saying so
//! (`"data": "..."` and `"encoding": "base64"`; `"stdout"` and `"stdout_encoding"`). A missing
//! marker means text, which is what the original client and earlier orange agents send.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// How a JSON string field holds bytes that are not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Standard base64 with padding (RFC 4648, section 4).
    Base64,
}

/// The JSON form of `bytes`: the text itself when it is valid UTF-8 (no marker), else its base64
/// and [`Encoding::Base64`].
pub fn encode(bytes: &[u8]) -> (String, Option<Encoding>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (STANDARD.encode(bytes), Some(Encoding::Base64)),
    }
}

/// [`encode`] of owned bytes, without a copy when they are text.
pub fn encode_owned(bytes: Vec<u8>) -> (String, Option<Encoding>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => (STANDARD.encode(e.as_bytes()), Some(Encoding::Base64)),
    }
}

/// The bytes a JSON field holds: its text as is without a marker, its base64 decoded with one.
/// The error says the base64 is bad.
pub fn decode(text: &str, encoding: Option<Encoding>) -> Result<Vec<u8>, String> {
    match encoding {
        None => Ok(text.as_bytes().to_vec()),
        Some(Encoding::Base64) => {
            STANDARD.decode(text).map_err(|e| format!("data marked base64 does not decode: {e}"))
        }
    }
}

/// Drops a character cut at the end of `bytes` (by a cap that kept only their first bytes) when
/// the rest is text, so that a shortened text stays text.
pub fn trim_cut_character(bytes: &mut Vec<u8>) {
    if let Err(e) = std::str::from_utf8(bytes) {
        if e.error_len().is_none() {
            bytes.truncate(e.valid_up_to());
        }
    }
}

/// The most bytes a field of `text_len` characters can decode to (to refuse an oversized field
/// before decoding it).
pub fn max_decoded_len(text_len: usize, encoding: Option<Encoding>) -> usize {
    match encoding {
        None => text_len,
        Some(Encoding::Base64) => text_len.div_ceil(4) * 3,
    }
}

/// Serde of a byte field as standard base64 text (`#[serde(with = "base64_field")]`), for input
/// bytes such as a task's stdin, which are sent whole rather than shown.
pub mod base64_field {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `bytes` as base64 text.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads base64 text; the error says it does not decode.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("stdin is not base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text_and_other_bytes_become_marked_base64() {
        assert_eq!(encode("café\n".as_bytes()), ("café\n".to_owned(), None));
        assert_eq!(encode(b"caf\xe9"), ("Y2Fm6Q==".to_owned(), Some(Encoding::Base64)));
        assert_eq!(encode_owned(b"caf\xe9".to_vec()), encode(b"caf\xe9"));
        assert_eq!(encode_owned(b"ok".to_vec()), ("ok".to_owned(), None));
        assert_eq!(serde_json::to_string(&Encoding::Base64).unwrap(), "\"base64\"");
    }

    #[test]
    fn every_byte_string_round_trips() {
        let all: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for bytes in [&b""[..], b"plain", b"\xff\xfe", &all] {
            let (text, encoding) = encode(bytes);
            assert_eq!(decode(&text, encoding).unwrap(), bytes);
            assert!(max_decoded_len(text.len(), encoding) >= bytes.len());
        }
    }

    #[test]
    fn a_base64_field_round_trips_and_refuses_bad_text() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Input {
            #[serde(with = "base64_field")]
            stdin: Vec<u8>,
        }
        let input = Input { stdin: b"caf\xe9".to_vec() };
        let text = serde_json::to_string(&input).unwrap();
        assert_eq!(text, r#"{"stdin":"Y2Fm6Q=="}"#);
        assert_eq!(serde_json::from_str::<Input>(&text).unwrap(), input);
        assert!(serde_json::from_str::<Input>(r#"{"stdin":"!"}"#).is_err());
    }

    #[test]
    fn a_cut_character_is_dropped_only_from_text() {
        let mut cut = "aé".as_bytes()[..2].to_vec();
        trim_cut_character(&mut cut);
        assert_eq!(cut, b"a");
        let mut binary = b"\xff\xc3".to_vec();
        trim_cut_character(&mut binary);
        assert_eq!(binary, b"\xff\xc3");
    }

    #[test]
    fn bad_base64_is_an_error_and_unmarked_text_is_taken_as_is() {
        assert!(decode("not base64!", Some(Encoding::Base64)).unwrap_err().contains("does not decode"));
        assert_eq!(decode("Y2Fm6Q==", None).unwrap(), b"Y2Fm6Q==");
    }
}
