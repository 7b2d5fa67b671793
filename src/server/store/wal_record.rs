//! The write-ahead log's record format: how one committed write (a transaction's puts and
//! removes, or a single put or remove) is framed, and how a segment's bytes are read back,
//! complete records only.
//!
//! A record is `length (u32 LE) | crc32 (u32 LE) | version (u8) | ops`, where `length` counts
//! the version byte and the ops, and the CRC32 covers the same bytes. An op is
//! `kind (u8: 1 put, 2 remove) | tree name length (u8) | tree name | key length (u32 LE) | key`,
//! followed for a put by `value length (u32 LE) | value`. Ops are in the order the database
//! applied them, so replaying them in order gives every key its last value.
//!
//! Reading stops quietly at a torn tail (a record cut short, or a tail of zero bytes: what a
//! crash in the middle of an append leaves); a complete record whose checksum, version or ops
//! are wrong is an error naming the file and the offset, never skipped. So is a record whose
//! length runs past the end while a complete record under its checksum is there: its length
//! was damaged, and cutting it off as torn would drop it and every record after it.

use std::path::Path;

use super::StoreError;

/// Version of the record layout, the first byte of every record's checksummed part.
pub const VERSION: u8 = 1;
/// Bytes in front of a record's checksummed part: its length and its CRC32.
pub const HEADER: usize = 8;
/// Largest record read back (a fan-out enqueue of tens of thousands of tasks fits).
pub const MAX_RECORD: usize = 512 << 20;

const PUT: u8 = 1;
const REMOVE: u8 = 2;

/// One write of a record: `value` `None` is a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op<'a> {
    /// Name of the tree written.
    pub tree: &'a [u8],
    /// The key.
    pub key: &'a [u8],
    /// The new value, or `None` when the key was removed.
    pub value: Option<&'a [u8]>,
}

/// Appends one op to the ops of a record being built.
pub fn push_op(ops: &mut Vec<u8>, tree: &str, key: &[u8], value: Option<&[u8]>) {
    // Tree names are the store's own short identifiers (see `trees.rs`).
    debug_assert!(tree.len() <= usize::from(u8::MAX));
    ops.push(if value.is_some() { PUT } else { REMOVE });
    ops.push(tree.len() as u8);
    ops.extend_from_slice(tree.as_bytes());
    push_bytes(ops, key);
    if let Some(value) = value {
        push_bytes(ops, value);
    }
}

fn push_bytes(ops: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are far below 4 GiB (sled's own limit on a value is lower).
    ops.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    ops.extend_from_slice(bytes);
}

/// Frames `ops` as one record: header, version, ops.
pub fn frame(ops: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + 1 + ops.len());
    // A record is at most MAX_RECORD bytes when read back; a larger one is refused there.
    record.extend_from_slice(&((ops.len() + 1) as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[VERSION]);
    crc.update(ops);
    record.extend_from_slice(&crc.finalize().to_le_bytes());
    record.push(VERSION);
    record.extend_from_slice(ops);
    record
}

/// What a segment holds: its complete records (their ops, undecoded) and the length of the
/// prefix they make up (shorter than the file when its tail is torn).
#[derive(Debug)]
pub struct Scan<'a> {
    /// Each complete record's ops, in order.
    pub records: Vec<&'a [u8]>,
    /// Bytes of complete records.
    pub end: usize,
}

/// Reads the complete records of `bytes`, the contents of the segment `path`.
pub fn scan<'a>(bytes: &'a [u8], path: &Path) -> Result<Scan<'a>, StoreError> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(ops) = next_record(bytes, at, path)? {
        records.push(ops);
        at += HEADER + 1 + ops.len();
    }
    Ok(Scan { records, end: at })
}

/// The ops of the record at `at`, or `None` at the end or at a torn tail.
fn next_record<'a>(bytes: &'a [u8], at: usize, path: &Path) -> Result<Option<&'a [u8]>, StoreError> {
    let rest = &bytes[at..];
    if rest.len() < HEADER || rest.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len == 0 || len > MAX_RECORD {
        return Err(corrupt(path, at, &format!("record length {len} out of range")));
    }
    let Some(body) = rest.get(HEADER..HEADER + len) else {
        // Past the end: a torn record, unless its length field is what was damaged.
        return match complete_prefix(&rest[HEADER..], crc) {
            Some(whole) => Err(corrupt(
                path,
                at,
                &format!(
                    "record length {len} runs past the end, but a complete record of {whole} bytes is there"
                ),
            )),
            None => Ok(None),
        };
    };
    if crc32fast::hash(body) != crc {
        return Err(corrupt(path, at, "checksum mismatch"));
    }
    if body[0] != VERSION {
        return Err(corrupt(path, at, &format!("unknown record version {}", body[0])));
    }
    Ok(Some(&body[1..]))
}

/// The length of a record body at the start of `bytes` (the rest of a segment, after a header
/// whose length runs past its end) that matches the header's checksum `crc`, if one does.
/// A torn record has none (its body is cut short); a complete record whose length field was
/// damaged has one, and must not be cut off as a torn tail with the records after it. Runs
/// only when a segment's last record seems torn, once per open.
fn complete_prefix(bytes: &[u8], crc: u32) -> Option<usize> {
    if bytes.first() != Some(&VERSION) {
        return None;
    }
    let mut hasher = crc32fast::Hasher::new();
    for (at, byte) in bytes.iter().enumerate() {
        hasher.update(std::slice::from_ref(byte));
        if hasher.clone().finalize() == crc {
            return Some(at + 1);
        }
    }
    None
}

/// The ops of a record read by [`scan`] from `path` at `offset`.
pub fn decode_ops<'a>(mut ops: &'a [u8], path: &Path, offset: usize) -> Result<Vec<Op<'a>>, StoreError> {
    let mut decoded = Vec::new();
    while !ops.is_empty() {
        let op = decode_op(&mut ops).ok_or_else(|| corrupt(path, offset, "malformed write in a record"))?;
        decoded.push(op);
    }
    Ok(decoded)
}

fn decode_op<'a>(ops: &mut &'a [u8]) -> Option<Op<'a>> {
    let (&kind, rest) = ops.split_first()?;
    let (&name_len, rest) = rest.split_first()?;
    let (tree, mut rest) = rest.split_at_checked(usize::from(name_len))?;
    let key = take_bytes(&mut rest)?;
    let value = match kind {
        PUT => Some(take_bytes(&mut rest)?),
        REMOVE => None,
        _ => return None,
    };
    *ops = rest;
    Some(Op { tree, key, value })
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let (bytes, tail) = tail.split_at_checked(u32::from_le_bytes(*len) as usize)?;
    *rest = tail;
    Some(bytes)
}

/// A damaged log: names the file and the offset of the bad record.
pub fn corrupt(path: &Path, offset: usize, why: &str) -> StoreError {
    StoreError::Io(format!("write-ahead log {} is damaged at offset {offset}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> Vec<u8> {
        let mut ops = Vec::new();
        push_op(&mut ops, "tasks", &[n; 3], Some(&vec![n; usize::from(n) * 7]));
        push_op(&mut ops, "queue", &[n], None);
        frame(&ops)
    }

    #[test]
    fn ops_read_back_as_written() {
        let bytes = [record(1), record(2)].concat();
        let path = Path::new("seg");
        let scan = scan(&bytes, path).unwrap();
        assert_eq!(scan.end, bytes.len());
        assert_eq!(scan.records.len(), 2);
        let ops = decode_ops(scan.records[1], path, 0).unwrap();
        assert_eq!(ops[0], Op { tree: b"tasks", key: &[2; 3], value: Some(&[2; 14]) });
        assert_eq!(ops[1], Op { tree: b"queue", key: &[2], value: None });
    }

    #[test]
    fn a_cut_anywhere_keeps_exactly_the_complete_records() {
        let records: Vec<Vec<u8>> = (1..=4).map(record).collect();
        let bytes = records.concat();
        let path = Path::new("seg");
        for cut in 0..=bytes.len() {
            let mut ends = records.iter().scan(0, |end, r| {
                *end += r.len();
                Some(*end)
            });
            let complete = ends.by_ref().take_while(|&end| end <= cut).count();
            let scan = scan(&bytes[..cut], path).unwrap();
            assert_eq!(scan.records.len(), complete, "cut at {cut}");
            assert_eq!(scan.end, records[..complete].iter().map(Vec::len).sum::<usize>(), "cut at {cut}");
        }
    }

    #[test]
    fn a_zero_filled_tail_is_torn_but_a_bad_checksum_is_an_error_naming_file_and_offset() {
        let mut bytes = [record(1), record(2), record(3)].concat();
        bytes.extend_from_slice(&[0; 100]);
        let path = Path::new("/data/wal/7.log");
        assert_eq!(scan(&bytes, path).unwrap().records.len(), 3);
        let second = record(1).len();
        bytes[second + HEADER + 3] ^= 0x40;
        let err = scan(&bytes, path).unwrap_err().to_string();
        assert!(err.contains("/data/wal/7.log") && err.contains(&format!("offset {second}")), "{err}");
        assert!(err.contains("checksum"), "{err}");
    }
}
