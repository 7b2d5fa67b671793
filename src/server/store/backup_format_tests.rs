//! Tests of the backup file format: a round trip, and every way a file can be cut short or
//! damaged ending in an error that names where, never a panic nor a silent success.

use super::*;

fn header() -> Header {
    Header { orange_version: "0.1.0".into(), created_at_ms: 1_700_000_000_000 }
}

fn cut() -> Cut {
    Cut { at_ms: 1_700_000_000_500, segment: 3, offset: 4096 }
}

/// A small backup holding one of each kind of record.
fn small_backup() -> Vec<u8> {
    let mut writer = BackupWriter::start(Vec::new(), &header()).expect("start");
    writer.file("admin.token", b"token\n").expect("file");
    writer.put(b"tasks", b"k1", b"v1").expect("put");
    writer.put(b"agents", b"web-1", &[0; 300]).expect("put");
    writer.remove(b"tasks", b"k1").expect("remove");
    let (bytes, trailer, size) = writer.finish(cut(), 77).expect("finish");
    assert_eq!(trailer.counts, Counts { puts: 2, removes: 1, files: 1 });
    assert_eq!(size, bytes.len() as u64);
    bytes
}

fn read_all(bytes: &[u8]) -> Result<(Header, Vec<Item>, Trailer), FormatError> {
    let (mut reader, header) = BackupReader::open(bytes)?;
    let mut items = Vec::new();
    while let Some((_, item)) = reader.next_item()? {
        items.push(item);
    }
    let trailer = reader.trailer().cloned().expect("a trailer after the last item");
    Ok((header, items, trailer))
}

#[test]
fn a_backup_reads_back_as_written() {
    let (read_header, items, trailer) = read_all(&small_backup()).expect("read");
    assert_eq!(read_header, header());
    assert_eq!(
        items,
        vec![
            Item::File { name: "admin.token".into(), bytes: b"token\n".to_vec() },
            Item::Put { tree: b"tasks".to_vec(), key: b"k1".to_vec(), value: b"v1".to_vec() },
            Item::Put { tree: b"agents".to_vec(), key: b"web-1".to_vec(), value: vec![0; 300] },
            Item::Remove { tree: b"tasks".to_vec(), key: b"k1".to_vec() },
        ]
    );
    assert_eq!((trailer.cut, trailer.id_floor, trailer.counts.records()), (cut(), 77, 4));
}

#[test]
fn a_backup_cut_at_any_byte_is_an_error_not_a_panic() {
    let bytes = small_backup();
    for len in 0..bytes.len() {
        let err = read_all(&bytes[..len]).expect_err("a truncated backup is refused");
        let text = err.to_string();
        match err {
            FormatError::NotABackup => assert!(len < MAGIC.len(), "at {len}: {text}"),
            FormatError::Truncated { offset, .. } => {
                assert_eq!(offset, len as u64, "the error names where the file ends: {text}")
            }
            other => panic!("cut at {len}: unexpected error {other}"),
        }
    }
}

#[test]
fn a_flipped_bit_anywhere_is_detected() {
    let bytes = small_backup();
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        let err = read_all(&damaged).expect_err("a damaged backup is refused");
        // A changed length may make the file look cut short; everything else is named.
        assert!(
            matches!(
                err,
                FormatError::NotABackup
                    | FormatError::NewerVersion { .. }
                    | FormatError::BadChecksum { .. }
                    | FormatError::Truncated { .. }
                    | FormatError::Malformed { .. }
            ),
            "byte {at}: {err}"
        );
    }
}

#[test]
fn a_bad_checksum_names_the_record() {
    let bytes = small_backup();
    let (mut reader, _) = BackupReader::open(&bytes[..]).expect("open");
    let (_, _) = reader.next_item().expect("first").expect("an item");
    let (second, _) = reader.next_item().expect("second").expect("an item");
    let mut damaged = bytes.clone();
    // The last byte of the second record's key ("k1"), inside its body.
    damaged[second as usize + FRAME_HEAD + 1 + 5 + 4 + 1] ^= 1;
    let err = read_all(&damaged).expect_err("refused");
    assert!(matches!(err, FormatError::BadChecksum { offset } if offset == second), "{err}");
    assert!(err.to_string().contains(&format!("at byte {second}")), "{err}");
}

#[test]
fn wrong_magic_newer_versions_and_trailing_bytes_are_refused() {
    let mut bytes = small_backup();
    let err = read_all(b"PK\x03\x04 not a backup at all").expect_err("refused");
    assert!(err.to_string().contains("not an orange backup"), "{err}");
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = read_all(&bytes).expect_err("refused");
    assert!(err.to_string().contains("format version 2 is newer"), "{err}");
    let mut longer = small_backup();
    longer.push(0);
    let err = read_all(&longer).expect_err("refused");
    assert!(err.to_string().contains("bytes follow the trailer"), "{err}");
}

#[test]
fn a_huge_length_is_refused_before_anything_is_allocated() {
    let mut bytes = small_backup();
    let header_len = u32::from_le_bytes(bytes[13..17].try_into().expect("4 bytes")) as usize;
    let first = 12 + FRAME_HEAD + header_len + 4;
    bytes[first + 1..first + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = read_all(&bytes).expect_err("refused");
    assert!(err.to_string().contains("larger than the limit"), "{err}");
    assert!(err.to_string().contains(&format!("at byte {first}")), "{err}");
}

#[test]
fn oversized_inputs_are_refused_when_written() {
    let mut writer = BackupWriter::start(Vec::new(), &header()).expect("start");
    assert!(writer.file("enroll.key", &vec![b'k'; MAX_FILE + 1]).is_err());
    assert!(writer.put(&[b't'; 256], b"k", b"v").is_err());
}
