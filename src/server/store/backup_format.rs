//! The backup file's format: how [`BackupWriter`] lays out a backup and how [`BackupReader`]
//! reads one back, refusing anything that is not a whole, undamaged backup this build can read.
//!
//! A backup is:
//! - `ORNGBKUP` (8 bytes of magic) and the format version (u32 LE, now 1);
//! - a header frame (JSON: orange's version, when the backup began);
//! - data frames, in the order they are to be applied: `put` (tree, key, value), `remove`
//!   (tree, key) and `file` (a secret file of the data directory: name, bytes);
//! - a trailer frame (JSON: the moment the backup is consistent to, the id floor, the count of
//!   each kind of frame, and the CRC32 of every byte before the trailer);
//! - nothing after it.
//!
//! A frame is `kind (u8) | length (u32 LE) | body | crc32 (u32 LE)`, the CRC covering the kind,
//! the length and the body. A tree or file name is `length (u8) | bytes`; a key, value or file's
//! bytes `length (u32 LE) | bytes`. Every length is checked against its limit before anything is
//! read into memory, and every error names the byte offset where the damage is.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The first bytes of every backup.
pub const MAGIC: [u8; 8] = *b"ORNGBKUP";
/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest frame body read back (a task record holding 16 MiB of stdin fits well).
pub const MAX_FRAME: usize = 64 << 20;
/// Largest header or trailer.
const MAX_META: usize = 64 * 1024;
/// Largest secret file carried.
pub const MAX_FILE: usize = 64 * 1024;

const HEADER: u8 = 1;
const PUT: u8 = 2;
const REMOVE: u8 = 3;
const FILE: u8 = 4;
const TRAILER: u8 = 5;

/// Bytes of a frame before its body: kind and length.
const FRAME_HEAD: usize = 5;

/// What a backup says about itself before its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The orange version that wrote it.
    pub orange_version: String,
    /// When the backup began (Unix milliseconds): it holds every write acknowledged before.
    pub created_at_ms: i64,
}

/// Where the backup was cut: it holds exactly the writes the log held at that point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// When it was cut (Unix milliseconds).
    pub at_ms: i64,
    /// The log segment then active.
    pub segment: u64,
    /// Bytes of that segment then written.
    pub offset: u64,
}

/// How many frames of each kind a backup holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// `put` frames.
    pub puts: u64,
    /// `remove` frames.
    pub removes: u64,
    /// `file` frames.
    pub files: u64,
}

impl Counts {
    /// Every data frame.
    pub fn records(&self) -> u64 {
        self.puts + self.removes + self.files
    }
}

/// What a backup says about itself at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// The moment the data is consistent to.
    pub cut: Cut,
    /// Ids handed out from a store restored from it start at least here.
    pub id_floor: u64,
    /// Its data frames.
    pub counts: Counts,
    /// Bytes before the trailer frame.
    pub bytes: u64,
    /// CRC32 of those bytes.
    pub crc32: u32,
}

/// One data frame read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Set `key` of `tree` to `value`.
    Put {
        /// The tree's name.
        tree: Vec<u8>,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` of `tree`.
    Remove {
        /// The tree's name.
        tree: Vec<u8>,
        /// The key.
        key: Vec<u8>,
    },
    /// A file of the data directory.
    File {
        /// Its name.
        name: String,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// Why a backup cannot be written or read.
#[derive(Debug, Error)]
pub enum FormatError {
    /// The file does not start with the magic.
    #[error("not an orange backup (its first bytes are not {:?})", String::from_utf8_lossy(&MAGIC))]
    NotABackup,
    /// Written by a newer orange.
    #[error(
        "backup format version {found} is newer than this orange reads (up to {FORMAT_VERSION}); restore it with a newer orange"
    )]
    NewerVersion {
        /// The version in the file.
        found: u32,
    },
    /// The file ends before its trailer.
    #[error("the backup is truncated at byte {offset}: it ends inside {what}; the file is incomplete")]
    Truncated {
        /// Where the file ends.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A frame's checksum does not match.
    #[error("the backup is damaged: the record at byte {offset} fails its checksum")]
    BadChecksum {
        /// Where the frame starts.
        offset: u64,
    },
    /// A frame is well framed but says something impossible.
    #[error("the backup is damaged at byte {offset}: {what}")]
    Malformed {
        /// Where the frame starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Writes a backup to `W`, frame by frame, keeping the counts and the checksum for the trailer.
pub struct BackupWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    bytes: u64,
    counts: Counts,
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup on `out`: magic, format version and `header`.
    pub fn start(out: W, header: &Header) -> Result<Self, FormatError> {
        let mut writer =
            BackupWriter { out, crc: crc32fast::Hasher::new(), bytes: 0, counts: Counts::default() };
        writer.raw(&MAGIC)?;
        writer.raw(&FORMAT_VERSION.to_le_bytes())?;
        writer.frame(HEADER, &json(header))?;
        Ok(writer)
    }

    /// Adds `key` = `value` of `tree`.
    pub fn put(&mut self, tree: &[u8], key: &[u8], value: &[u8]) -> Result<(), FormatError> {
        let mut body = Vec::with_capacity(1 + tree.len() + 8 + key.len() + value.len());
        push_name(&mut body, tree)?;
        push_bytes(&mut body, key);
        push_bytes(&mut body, value);
        self.frame(PUT, &body)?;
        self.counts.puts += 1;
        Ok(())
    }

    /// Adds the removal of `key` from `tree`.
    pub fn remove(&mut self, tree: &[u8], key: &[u8]) -> Result<(), FormatError> {
        let mut body = Vec::with_capacity(1 + tree.len() + 4 + key.len());
        push_name(&mut body, tree)?;
        push_bytes(&mut body, key);
        self.frame(REMOVE, &body)?;
        self.counts.removes += 1;
        Ok(())
    }

    /// Adds the data directory's file `name`.
    pub fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), FormatError> {
        if bytes.len() > MAX_FILE {
            return Err(
                io::Error::other(format!("{name} is {} bytes, more than {MAX_FILE}", bytes.len())).into()
            );
        }
        let mut body = Vec::with_capacity(1 + name.len() + 4 + bytes.len());
        push_name(&mut body, name.as_bytes())?;
        push_bytes(&mut body, bytes);
        self.frame(FILE, &body)?;
        self.counts.files += 1;
        Ok(())
    }

    /// Writes the trailer (cut at `cut`, ids continuing from `id_floor`), flushes, and returns
    /// the output, the trailer and the size of the whole backup.
    pub fn finish(mut self, cut: Cut, id_floor: u64) -> Result<(W, Trailer, u64), FormatError> {
        let trailer = Trailer {
            cut,
            id_floor,
            counts: self.counts,
            bytes: self.bytes,
            crc32: self.crc.clone().finalize(),
        };
        self.frame(TRAILER, &json(&trailer))?;
        self.out.flush()?;
        Ok((self.out, trailer, self.bytes))
    }

    fn frame(&mut self, kind: u8, body: &[u8]) -> Result<(), FormatError> {
        if body.len() > MAX_FRAME {
            let what =
                format!("a record of {} bytes is larger than a backup holds ({MAX_FRAME})", body.len());
            return Err(io::Error::other(what).into());
        }
        let mut head = [0; FRAME_HEAD];
        head[0] = kind;
        // At most MAX_FRAME, checked above.
        head[1..].copy_from_slice(&(body.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(body);
        self.raw(&head)?;
        self.raw(body)?;
        self.raw(&crc.finalize().to_le_bytes())
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        self.out.write_all(bytes)?;
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Reads a backup back, checking every frame, the trailer and the end of the file.
pub struct BackupReader<R: Read> {
    input: R,
    offset: u64,
    crc: crc32fast::Hasher,
    counts: Counts,
    trailer: Option<Trailer>,
}

impl<R: Read> BackupReader<R> {
    /// Reads the magic, the format version and the header.
    pub fn open(input: R) -> Result<(Self, Header), FormatError> {
        let mut reader = BackupReader {
            input,
            offset: 0,
            crc: crc32fast::Hasher::new(),
            counts: Counts::default(),
            trailer: None,
        };
        let mut magic = [0; 8];
        match reader.exact(&mut magic, "the magic") {
            Err(FormatError::Truncated { .. }) => return Err(FormatError::NotABackup),
            other => other?,
        }
        if magic != MAGIC {
            return Err(FormatError::NotABackup);
        }
        let mut version = [0; 4];
        reader.exact(&mut version, "the format version")?;
        let found = u32::from_le_bytes(version);
        if found == 0 {
            return Err(malformed(MAGIC.len() as u64, "format version 0 does not exist".into()));
        }
        if found > FORMAT_VERSION {
            return Err(FormatError::NewerVersion { found });
        }
        let (kind, body, at) = reader.frame()?;
        if kind != HEADER {
            return Err(malformed(at, format!("the first record is of kind {kind}, not the header")));
        }
        let header = serde_json::from_slice(&body).map_err(|e| malformed(at, format!("bad header: {e}")))?;
        Ok((reader, header))
    }

    /// The next data frame and the offset it starts at; `None` once the trailer was read and
    /// checked (and the file ends there).
    pub fn next_item(&mut self) -> Result<Option<(u64, Item)>, FormatError> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        let before = (self.offset, self.crc.clone().finalize());
        let (kind, body, at) = self.frame()?;
        let mut body = Body { bytes: &body, at };
        let item = match kind {
            PUT => Item::Put { tree: body.name()?, key: body.bytes()?, value: body.bytes()? },
            REMOVE => Item::Remove { tree: body.name()?, key: body.bytes()? },
            FILE => Item::File { name: body.file_name()?, bytes: body.bytes()? },
            TRAILER => {
                self.trailer = Some(self.check_trailer(body.bytes, at, before)?);
                return Ok(None);
            }
            kind => return Err(malformed(at, format!("unknown record kind {kind}"))),
        };
        body.end()?;
        match item {
            Item::Put { .. } => self.counts.puts += 1,
            Item::Remove { .. } => self.counts.removes += 1,
            Item::File { .. } => self.counts.files += 1,
        }
        Ok(Some((at, item)))
    }

    /// The trailer, once [`Self::next_item`] returned `None`.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// Checks the trailer read at `at` against what was read before it (`before`: its offset
    /// and checksum), and that the file ends after it.
    fn check_trailer(&mut self, body: &[u8], at: u64, before: (u64, u32)) -> Result<Trailer, FormatError> {
        let trailer: Trailer =
            serde_json::from_slice(body).map_err(|e| malformed(at, format!("bad trailer: {e}")))?;
        if (trailer.bytes, trailer.crc32) != before {
            return Err(malformed(at, "the trailer's checksum of the whole file does not match".into()));
        }
        if trailer.counts != self.counts {
            return Err(malformed(
                at,
                format!("the trailer counts {:?} but the file holds {:?}", trailer.counts, self.counts),
            ));
        }
        let mut extra = [0; 1];
        if self.input.read(&mut extra)? != 0 {
            return Err(malformed(self.offset, "bytes follow the trailer".into()));
        }
        Ok(trailer)
    }

    /// Reads one frame: its kind, its body and the offset it starts at.
    fn frame(&mut self) -> Result<(u8, Vec<u8>, u64), FormatError> {
        let at = self.offset;
        let mut head = [0; FRAME_HEAD];
        self.exact(&mut head, "a record's header (the trailer is missing)")?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let limit = if matches!(head[0], HEADER | TRAILER) { MAX_META } else { MAX_FRAME };
        if len > limit {
            return Err(malformed(at, format!("a record of {len} bytes is larger than the limit ({limit})")));
        }
        let mut body = vec![0; len];
        self.exact(&mut body, "a record")?;
        let mut crc = [0; 4];
        self.exact(&mut crc, "a record's checksum")?;
        let mut expected = crc32fast::Hasher::new();
        expected.update(&head);
        expected.update(&body);
        if expected.finalize() != u32::from_le_bytes(crc) {
            return Err(FormatError::BadChecksum { offset: at });
        }
        Ok((head[0], body, at))
    }

    fn exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), FormatError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => return Err(FormatError::Truncated { offset: self.offset + filled as u64, what }),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.crc.update(buf);
        self.offset += buf.len() as u64;
        Ok(())
    }
}

/// A frame's body being taken apart.
struct Body<'a> {
    bytes: &'a [u8],
    /// Where the frame starts, for errors.
    at: u64,
}

impl Body<'_> {
    fn take(&mut self, len: usize) -> Result<Vec<u8>, FormatError> {
        if len > self.bytes.len() {
            return Err(malformed(self.at, "a field runs past the end of its record".into()));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken.to_vec())
    }

    fn name(&mut self) -> Result<Vec<u8>, FormatError> {
        let len = self.take(1)?[0];
        self.take(usize::from(len))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, FormatError> {
        let len = self.take(4)?;
        self.take(u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize)
    }

    fn file_name(&mut self) -> Result<String, FormatError> {
        let at = self.at;
        String::from_utf8(self.name()?).map_err(|_| malformed(at, "a file name is not UTF-8".into()))
    }

    fn end(&self) -> Result<(), FormatError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(malformed(self.at, format!("{} bytes left over in a record", self.bytes.len())))
        }
    }
}

fn malformed(offset: u64, what: String) -> FormatError {
    FormatError::Malformed { offset, what }
}

fn json(value: &impl Serialize) -> Vec<u8> {
    // Plain structs of numbers and strings always serialize.
    serde_json::to_vec(value).expect("header and trailer serialize")
}

fn push_name(body: &mut Vec<u8>, name: &[u8]) -> Result<(), FormatError> {
    let len = u8::try_from(name.len()).map_err(|_| {
        io::Error::other(format!("name {:?} is longer than 255 bytes", String::from_utf8_lossy(name)))
    })?;
    body.push(len);
    body.extend_from_slice(name);
    Ok(())
}

fn push_bytes(body: &mut Vec<u8>, bytes: &[u8]) {
    // The frame as a whole is checked against MAX_FRAME (far below 4 GiB) before it is written.
    body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(bytes);
}

#[cfg(test)]
#[path = "backup_format_tests.rs"]
mod tests;
