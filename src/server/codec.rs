//! The only module that knows bincode: encodes stored records with a leading version byte of
//! their own type, and decodes every version of a record that this build still reads, so a
//! record can gain a field without making existing data directories unreadable.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The first version of every record: what orange 0.1.0 wrote, when one version byte covered
/// every stored value. A record type that never changed still writes it.
pub const FORMAT_VERSION: u8 = 1;

/// A value the store keeps: named, versioned on its own, written in a layout of its own
/// ([`Record::Stored`]) and read back from each older layout it still knows.
pub trait Record: Sized {
    /// Its name in error messages, e.g. `task`.
    const NAME: &'static str;
    /// The version this build writes.
    const VERSION: u8;
    /// The layout of [`Record::VERSION`].
    type Stored: Serialize + DeserializeOwned;

    /// The value in its stored layout.
    fn to_stored(&self) -> Self::Stored;

    /// The value read back from its stored layout; fails on a stored value the in-memory type
    /// cannot hold.
    fn from_stored(stored: Self::Stored) -> Result<Self, CodecError>;

    /// Reads `body`, written by an older `version` of the record (decode it with
    /// [`decode_body`] into that version's layout); `None` when this build does not know the
    /// version. Versions are never reused, so each arm here stays as long as data directories
    /// holding that version may exist.
    fn from_older(version: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        let _ = (version, body);
        None
    }
}

/// Why a stored value could not be decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The value is empty, so it has no version byte.
    #[error("stored value is empty")]
    Empty,
    /// The value was written in a version of its record this build does not read.
    #[error("stored {record} record has version {version}; this build reads versions up to {current}")]
    UnknownVersion {
        /// The record type ([`Record::NAME`]).
        record: &'static str,
        /// The version found.
        version: u8,
        /// The version this build writes.
        current: u8,
    },
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

/// Encodes `value` as its record's version byte + bincode of its stored layout.
pub fn encode<T: Record>(value: &T) -> Vec<u8> {
    let mut out = vec![T::VERSION];
    // Encoding into a Vec only fails for types serde cannot represent in bincode (maps with
    // unknown length, `skip_serializing_if`); stored layouts are plain structs without either.
    let body = bincode::serde::encode_to_vec(value.to_stored(), config())
        .expect("stored layouts encode with bincode");
    out.extend_from_slice(&body);
    out
}

/// Decodes a value written by [`encode`], by this build or by an older one.
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version == T::VERSION {
        return T::from_stored(decode_body(body)?);
    }
    T::from_older(version, body).unwrap_or(Err(CodecError::UnknownVersion {
        record: T::NAME,
        version,
        current: T::VERSION,
    }))
}

/// Decodes the bytes after the version byte into the layout `S` of that version; the whole
/// body must be used.
pub fn decode_body<S: DeserializeOwned>(body: &[u8]) -> Result<S, CodecError> {
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

    /// Version 1 of a sample record.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SampleV1 {
        name: String,
        labels: BTreeMap<String, String>,
        code: Option<i32>,
    }

    /// Version 2: a field was added.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        code: Option<i32>,
        retries: u32,
    }

    impl Record for Sample {
        const NAME: &'static str = "sample";
        const VERSION: u8 = 2;
        type Stored = Sample;

        fn to_stored(&self) -> Sample {
            self.clone()
        }

        fn from_stored(stored: Sample) -> Result<Sample, CodecError> {
            Ok(stored)
        }

        fn from_older(version: u8, body: &[u8]) -> Option<Result<Sample, CodecError>> {
            (version == 1).then(|| {
                let SampleV1 { name, labels, code } = decode_body(body)?;
                Ok(Sample { name, labels, code, retries: 0 })
            })
        }
    }

    fn sample() -> Sample {
        Sample {
            name: "w1".into(),
            labels: [("role".into(), "web".into())].into(),
            code: Some(-1),
            retries: 3,
        }
    }

    #[test]
    fn round_trips_with_its_records_version_byte() {
        let bytes = encode(&sample());
        assert_eq!(bytes[0], 2);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), sample());
    }

    #[test]
    fn an_older_version_decodes_through_its_own_layout() {
        let v1 = SampleV1 { name: "w1".into(), labels: BTreeMap::new(), code: None };
        let mut bytes = vec![1];
        bytes.extend(bincode::serde::encode_to_vec(&v1, config()).unwrap());
        let expected = Sample { name: "w1".into(), labels: BTreeMap::new(), code: None, retries: 0 };
        assert_eq!(decode::<Sample>(&bytes).unwrap(), expected);
    }

    #[test]
    fn an_unknown_version_names_the_record_and_the_version() {
        let mut bytes = encode(&sample());
        bytes[0] = 9;
        let err = decode::<Sample>(&bytes).unwrap_err();
        assert!(matches!(err, CodecError::UnknownVersion { record: "sample", version: 9, current: 2 }));
        assert_eq!(err.to_string(), "stored sample record has version 9; this build reads versions up to 2");
    }

    #[test]
    fn a_corrupt_length_is_an_error_not_a_huge_allocation() {
        let mut bytes = vec![2, 253];
        bytes.extend_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(matches!(decode::<Sample>(&bytes), Err(CodecError::Corrupt(_))));
    }

    #[test]
    fn refuses_empty_truncated_and_trailing() {
        let mut bytes = encode(&sample());
        assert!(matches!(decode::<Sample>(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode::<Sample>(&bytes[..bytes.len() - 1]), Err(CodecError::Corrupt(_))));
        bytes.push(0);
        assert!(matches!(decode::<Sample>(&bytes), Err(CodecError::Corrupt(_))));
    }
}
