//! The task journal: one small JSON file per task in `<state>/tasks/` (directory 0700, files
//! 0600), written durably (temp file, fsync, rename, fsync of the directory). A task is journaled
//! as started before it is acknowledged and run, its final report is journaled before it is
//! sent, and the entry is marked reported once the server took (or refused) it. This is what
//! keeps a task from running twice and a result from being lost across restarts.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::group::GroupRecord;
use crate::protocol::{ReportRequest, WireTask};

/// Directory of the journal inside the state directory.
pub const JOURNAL_DIR: &str = "tasks";
/// How long entries are kept after their last change.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often old entries are pruned while the agent runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Suffix of entry files.
const SUFFIX: &str = ".json";
/// Marker in the names of temporary files (which start with a dot).
const TEMP_MARK: &str = ".tmp.";
/// The lock file that keeps two agents from sharing one journal.
const LOCK_FILE: &str = ".lock";

/// Numbers temporary files, so threads writing different entries never share one.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What the journal knows about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The task id.
    pub task_id: String,
    /// The task type.
    pub task_type: String,
    /// The task's creation time, as the server sent it.
    pub create_at: String,
    /// Unix milliseconds when this agent started handling it.
    pub started_ms: i64,
    /// The final report, once the task finished.
    #[serde(default)]
    pub report: Option<ReportRequest>,
    /// True once the server acknowledged (or refused) the final report.
    #[serde(default)]
    pub reported: bool,
    /// True from the moment just before the task's handler runs. An entry without it is a task
    /// this agent took but never ran, so it may run it after a restart. Entries written before
    /// this field existed count as run.
    #[serde(default = "counts_as_run")]
    pub ran: bool,
    /// The task as delivered, so that one never run can be run after a restart.
    #[serde(default)]
    pub task: Option<WireTask>,
    /// The process groups of the task's processes that are running now: recorded as soon as one
    /// starts, removed once its process is gone. What a restart finds here, for a task without a
    /// report, is what the agent died with; it is ended before the task is reported `lost`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupRecord>,
}

fn counts_as_run() -> bool {
    true
}

impl Entry {
    /// A fresh `started` entry for `task`.
    pub fn started(task: &WireTask) -> Self {
        Entry {
            task_id: task.task_id.clone(),
            task_type: task.task_type.clone(),
            create_at: task.create_at.clone(),
            started_ms: chrono::Utc::now().timestamp_millis(),
            report: None,
            reported: false,
            ran: false,
            task: Some(task.clone()),
            groups: Vec::new(),
        }
    }
}

/// The journal directory.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating if needed) the journal under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Journal> {
        let dir = state_dir.join(JOURNAL_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the task journal {}", dir.display()))?;
        Ok(Journal { dir })
    }

    /// Takes the journal for this agent alone: a second agent on the same state directory would
    /// run and report the same tasks. Held until the returned lock is dropped.
    pub fn lock(&self) -> Result<JournalLock> {
        let path = self.dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::WouldBlock {
                bail!(
                    "another agent is using the task journal {}; give each agent its own --state",
                    self.dir.display()
                );
            }
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(JournalLock { _file: file })
    }

    /// Removes temporary files a crash left behind. Only the agent owning the journal may call
    /// this, before it writes.
    pub fn remove_temp_files(&self) -> Result<()> {
        for name in self.names()? {
            if name.contains(TEMP_MARK) {
                let _ = fs::remove_file(self.dir.join(&name));
            }
        }
        Ok(())
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry of task `id`, `None` if there is none.
    pub fn get(&self, id: &str) -> Result<Option<Entry>> {
        let path = self.dir.join(file_name(id));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let entry = serde_json::from_slice(&bytes)
            .with_context(|| format!("journal entry {} is not valid", path.display()))?;
        Ok(Some(entry))
    }

    /// Writes `entry` durably: once this returns, a crash cannot lose it.
    pub fn put(&self, entry: &Entry) -> Result<()> {
        self.write(entry, true)
    }

    /// Writes `entry` (atomically: temporary file, then rename), synced to disk when `sync`.
    fn write(&self, entry: &Entry, sync: bool) -> Result<()> {
        let name = file_name(&entry.task_id);
        let bytes = serde_json::to_vec(entry).context("cannot encode a journal entry")?;
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{name}{TEMP_MARK}{}.{n}", std::process::id()));
        write_file(&tmp, &bytes, sync)?;
        let path = self.dir.join(&name);
        fs::rename(&tmp, &path).with_context(|| format!("cannot move {} into place", tmp.display()))?;
        if !sync {
            return Ok(());
        }
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot sync {}", self.dir.display()))
    }

    /// Marks the final report of task `id` as taken by the server. Not synced: if a crash loses
    /// the mark, the report is sent once more and the server accepts it as a repeat.
    pub fn mark_reported(&self, id: &str) -> Result<()> {
        match self.get(id)? {
            Some(entry) if !entry.reported => self.write(&Entry { reported: true, ..entry }, false),
            _ => Ok(()),
        }
    }

    /// Removes the entry of task `id` (one never run, handed back to be run afresh).
    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.dir.join(file_name(id));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    /// Every readable entry; unreadable ones are logged and skipped.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for name in self.names()? {
            let Some(stem) = name.strip_suffix(SUFFIX).filter(|_| !name.starts_with('.')) else {
                continue;
            };
            match fs::read(self.dir.join(&name))
                .map_err(anyhow::Error::from)
                .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).map_err(anyhow::Error::from))
            {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    tracing::warn!(entry = stem, error = %format!("{e:#}"), "skipping unreadable journal entry")
                }
            }
        }
        Ok(entries)
    }

    /// Removes entries unchanged since `before`, except those `keep` names; returns how many.
    pub fn prune(&self, before: SystemTime, keep: &dyn Fn(&str) -> bool) -> Result<usize> {
        let mut removed = 0;
        for name in self.names()? {
            if name.starts_with('.') || !name.ends_with(SUFFIX) {
                continue;
            }
            let path = self.dir.join(&name);
            let old = fs::metadata(&path).and_then(|m| m.modified()).is_ok_and(|t| t < before);
            if old && !keep(&name) && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn names(&self) -> Result<Vec<String>> {
        let read = fs::read_dir(&self.dir).with_context(|| format!("cannot list {}", self.dir.display()))?;
        Ok(read.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
    }
}

/// Exclusive use of a journal, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

/// The file name of task `id`'s entry: the id itself when it is a plain name (task ids are
/// UUIDs), else a hash of it, so no id can name a path outside the journal.
pub fn file_name(id: &str) -> String {
    let plain = id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain && !id.is_empty() && id.len() <= 128 {
        format!("{id}{SUFFIX}")
    } else {
        format!("sha256-{}{SUFFIX}", hex::encode(Sha256::digest(id.as_bytes())))
    }
}

/// Creates `path` (0600), writes `bytes` and syncs it.
fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn task(id: &str) -> WireTask {
        WireTask {
            task_id: id.into(),
            task_type: "shell".into(),
            do_status: String::new(),
            create_at: "2026-11-26T06:40:41Z".into(),
            payload: "true".into(),
            result: String::new(),
            timeout_secs: None,
            env: Default::default(),
            cwd: None,
            user: None,
            stdin: Vec::new(),
            attempt: None,
            more: Vec::new(),
        }
    }

    #[test]
    fn entries_round_trip_with_private_modes_and_no_temp_files_left() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let journal = Journal::open(&tmp.path().join("state"))?;
        assert_eq!(fs::metadata(journal.dir())?.permissions().mode() & 0o777, 0o700);
        let entry = Entry::started(&task("0190a5e3-aaaa-7000-8000-000000000001"));
        journal.put(&entry)?;
        assert_eq!(journal.get(&entry.task_id)?, Some(entry.clone()));
        assert_eq!(journal.get("other")?, None);
        let finished = Entry { report: Some(ReportRequest::default()), ..entry.clone() };
        journal.put(&finished)?;
        journal.mark_reported(&entry.task_id)?;
        assert_eq!(journal.get(&entry.task_id)?, Some(Entry { reported: true, ..finished }));
        let names = journal.names()?;
        assert_eq!(names, ["0190a5e3-aaaa-7000-8000-000000000001.json"]);
        let mode = fs::metadata(journal.dir().join(&names[0]))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        Ok(())
    }

    #[test]
    fn process_groups_round_trip_and_entries_without_them_read_as_none() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let journal = Journal::open(tmp.path())?;
        let plain = Entry::started(&task("g"));
        let json = serde_json::to_string(&plain)?;
        assert!(!json.contains("groups"), "an entry without groups is written as before: {json}");
        let group = GroupRecord { pgid: 42, session: 40, leader_start: 7, boot_id: "b".into() };
        let running = Entry { ran: true, groups: vec![group], ..plain };
        journal.put(&running)?;
        assert_eq!(journal.get("g")?, Some(running));
        // As written by the previous release, without the field.
        let old = r#"{"task_id":"o","task_type":"shell","create_at":"x","started_ms":1,"report":null,"reported":false,"ran":true}"#;
        fs::write(journal.dir().join("o.json"), old)?;
        assert_eq!(journal.get("o")?.map(|e| e.groups), Some(Vec::new()));
        Ok(())
    }

    #[test]
    fn ids_that_are_not_plain_names_are_hashed() -> Result<()> {
        assert_eq!(file_name("abc-1_2"), "abc-1_2.json");
        for id in ["../../etc/passwd", "", "a/b", &"x".repeat(129)] {
            let name = file_name(id);
            assert!(name.starts_with("sha256-") && name.len() == 7 + 64 + 5, "{name}");
        }
        let tmp = tempfile::tempdir()?;
        let journal = Journal::open(tmp.path())?;
        journal.put(&Entry::started(&task("../escape")))?;
        assert_eq!(journal.get("../escape")?.map(|e| e.task_id), Some("../escape".to_owned()));
        assert_eq!(journal.entries()?.len(), 1);
        Ok(())
    }

    #[test]
    fn stale_temp_files_can_be_removed_and_bad_entries_are_skipped() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let journal = Journal::open(tmp.path())?;
        journal.put(&Entry::started(&task("good")))?;
        fs::write(journal.dir().join(".good.json.tmp.1.2"), "partial")?;
        fs::write(journal.dir().join("bad.json"), "{not json")?;
        journal.remove_temp_files()?;
        let ids: Vec<String> = journal.entries()?.into_iter().map(|e| e.task_id).collect();
        assert_eq!(ids, ["good"]);
        assert!(journal.get("bad").is_err());
        assert!(!journal.dir().join(".good.json.tmp.1.2").exists());
        Ok(())
    }

    #[test]
    fn only_one_agent_at_a_time_may_use_a_journal() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let journal = Journal::open(tmp.path())?;
        let lock = journal.lock()?;
        let err = Journal::open(tmp.path())?.lock().unwrap_err();
        assert!(format!("{err:#}").starts_with("another agent is using the task journal"), "{err:#}");
        drop(lock);
        let _again = journal.lock()?;
        assert_eq!(journal.prune(SystemTime::now() + Duration::from_secs(60), &|_| false)?, 0);
        assert!(journal.dir().join(LOCK_FILE).exists(), "pruning keeps the lock file");
        Ok(())
    }

    #[test]
    fn prune_removes_only_old_entries_not_kept() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let journal = Journal::open(tmp.path())?;
        for id in ["a", "b", "c"] {
            journal.put(&Entry::started(&task(id)))?;
        }
        assert_eq!(journal.prune(SystemTime::now() - RETENTION, &|_| false)?, 0);
        let future = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(journal.prune(future, &|name| name == file_name("b"))?, 2);
        let ids: Vec<String> = journal.entries()?.into_iter().map(|e| e.task_id).collect();
        assert_eq!(ids, ["b"]);
        Ok(())
    }
}
