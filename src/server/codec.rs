//! The only module that knows bincode: encodes stored values with a leading format version byte,
//! so that a later release can recognise and migrate values written by this one.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Format version written in front of every stored value.
pub const FORMAT_VERSION: u8 = 1;

/// Why a stored value could not be decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The value is empty, so it has no version byte.
    #[error("stored value is empty")]
    Empty,
    /// The value was written by a format this build does not read.
    #[error("stored value has format version {0}; this build reads version {FORMAT_VERSION}")]
    UnknownVersion(u8),
    /// The bytes after the version do not decode.
    #[error("stored value does not decode: {0}")]
    Corrupt(String),
}

/// Largest value decoding may allocate: bincode trusts length fields, so a corrupt one must not
/// make it allocate whatever it claims.
pub const MAX_DECODED_LEN: usize = 64 * 1024 * 1024;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn decode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_DECODED_LEN>,
> {
    bincode::config::standard().with_limit::<MAX_DECODED_LEN>()
}

/// Encodes `value` as version byte + bincode.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Encoding into a Vec only fails for types serde cannot represent in bincode (maps with
    // unknown length, `skip_serializing_if`); stored types are plain structs without either.
    let body = bincode::serde::encode_to_vec(value, config()).expect("stored types encode with bincode");
    out.extend_from_slice(&body);
    out
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, decode_config())
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Corrupt(format!("{} trailing bytes", body.len() - used)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        code: Option<i32>,
    }

    fn sample() -> Sample {
        Sample { name: "w1".into(), labels: [("role".into(), "web".into())].into(), code: Some(-1) }
    }

    #[test]
    fn round_trips_with_version_byte() {
        let bytes = encode(&sample());
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), sample());
    }

    #[test]
    fn a_corrupt_length_is_an_error_not_a_huge_allocation() {
        let mut bytes = vec![FORMAT_VERSION, 253];
        bytes.extend_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(matches!(decode::<Sample>(&bytes), Err(CodecError::Corrupt(_))));
    }

    #[test]
    fn refuses_unknown_version_empty_truncated_and_trailing() {
        let mut bytes = encode(&sample());
        assert!(matches!(decode::<Sample>(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode::<Sample>(&bytes[..bytes.len() - 1]), Err(CodecError::Corrupt(_))));
        bytes.push(0);
        assert!(matches!(decode::<Sample>(&bytes), Err(CodecError::Corrupt(_))));
        bytes[0] = 9;
        assert!(matches!(decode::<Sample>(&bytes), Err(CodecError::UnknownVersion(9))));
    }
}
