//! A task's process group as the journal keeps it, and ending what is left of one after the
//! agent that started it died. Only `/proc` and signals: no pidfd, no cgroup, so it works on
//! the oldest kernels the agent runs on (3.10).
//!
//! A group is recognised, never guessed: a [`GroupRecord`] holds the group id, the session and
//! the start time of the leader (field 22 of `/proc/PID/stat`, clock ticks after boot) and the
//! boot id. A member of the group must be in the same boot, group and session, and have started
//! no earlier than the leader. Linux never hands out a pid while it still names a process group,
//! so while any member of the task's group lives the group id cannot be someone else's; and when
//! the leader's pid is held by a process that started at another time, the task's group is gone
//! and nothing is signalled.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long what is left of a dead agent's task may take to end after SIGTERM before SIGKILL.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2);
/// How often the sweep looks whether the group ended.
const SWEEP_TICK: Duration = Duration::from_millis(20);
/// Where the kernel names the current boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// What the journal keeps of a running task's process group: enough to find what is left of it
/// after a crash, and never to signal anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The process group id: the pid of the group's leader.
    pub pgid: libc::pid_t,
    /// The session the group belongs to.
    pub session: libc::pid_t,
    /// When the leader started, in clock ticks after boot (`/proc/PID/stat` field 22).
    pub leader_start: u64,
    /// The kernel's boot id: after a reboot, nothing of the group is left.
    pub boot_id: String,
}

/// The fields of `/proc/PID/stat` the sweep reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    pid: libc::pid_t,
    zombie: bool,
    pgrp: libc::pid_t,
    session: libc::pid_t,
    start: u64,
}

impl GroupRecord {
    /// The record of the group `leader` leads, read from `/proc`; `None` where `/proc` cannot
    /// tell (then nothing can be swept later, and only the parent-death signal helps).
    pub fn of_leader(leader: libc::pid_t) -> Option<GroupRecord> {
        let stat = read_stat(leader)?;
        let boot_id = boot_id()?;
        (stat.pgrp == leader).then_some(GroupRecord {
            pgid: leader,
            session: stat.session,
            leader_start: stat.start,
            boot_id,
        })
    }

    /// The live processes left of this group; none when the group is gone or the ids now name
    /// another group.
    pub fn members(&self) -> Vec<libc::pid_t> {
        self.members_in(&Snapshot::take())
    }

    /// The live processes of this group in `snapshot`.
    fn members_in(&self, snapshot: &Snapshot) -> Vec<libc::pid_t> {
        if snapshot.boot_id.as_deref() != Some(self.boot_id.as_str()) {
            return Vec::new();
        }
        if snapshot.stats.iter().any(|s| s.pid == self.pgid && s.start != self.leader_start) {
            // The leader's pid names a newer process: the group ended and its id was reused.
            return Vec::new();
        }
        snapshot.stats.iter().filter(|s| !s.zombie && self.holds(s)).map(|s| s.pid).collect()
    }

    fn holds(&self, stat: &Stat) -> bool {
        stat.pgrp == self.pgid && stat.session == self.session && stat.start >= self.leader_start
    }
}

/// Ends what is left of `groups`: SIGTERM to each group that still has members, SIGKILL after
/// `grace` to those that did not end. Returns how many processes were found.
pub fn end_groups(groups: &[GroupRecord], grace: Duration) -> usize {
    let found: usize = live_groups(groups).map(|(_, members)| members).sum();
    if found == 0 {
        return 0;
    }
    signal_live(groups, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && live_groups(groups).next().is_some() {
        thread::sleep(SWEEP_TICK);
    }
    signal_live(groups, libc::SIGKILL);
    found
}

/// The groups that still have members, with how many, from one look at `/proc`.
fn live_groups(groups: &[GroupRecord]) -> impl Iterator<Item = (&GroupRecord, usize)> {
    let snapshot = Snapshot::take();
    groups.iter().map(move |g| (g, g.members_in(&snapshot).len())).filter(|(_, members)| *members > 0)
}

/// Sends `signal` to each group that still has members (checked just before).
fn signal_live(groups: &[GroupRecord], signal: libc::c_int) {
    for (group, _) in live_groups(groups) {
        // SAFETY: kill has no memory-safety preconditions; a negative pid names the process
        // group, which cannot be another group's while it has members.
        let rc = unsafe { libc::kill(-group.pgid, signal) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            tracing::debug!(pgid = group.pgid, signal, %error, "cannot signal a leftover process group");
        }
    }
}

/// One look at the processes of this boot.
struct Snapshot {
    boot_id: Option<String>,
    stats: Vec<Stat>,
}

impl Snapshot {
    fn take() -> Snapshot {
        Snapshot { boot_id: boot_id(), stats: all_stats() }
    }
}

/// The current boot id, if the kernel says.
fn boot_id() -> Option<String> {
    fs::read_to_string(BOOT_ID).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// `/proc/PID/stat` of every process that can be read.
fn all_stats() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter_map(read_stat).collect()
}

fn read_stat(pid: libc::pid_t) -> Option<Stat> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted from the last `)`.
fn parse_stat(pid: libc::pid_t, line: &str) -> Option<Stat> {
    let (_, rest) = line.rsplit_once(')')?;
    // Fields from 3 (state) on; field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        pid,
        zombie: *fields.first()? == "Z",
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn stat_lines_are_read_from_the_last_parenthesis() {
        let line = "4242 (a (b) c) S 1 4242 4000 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        let stat = parse_stat(4242, line).expect("parses");
        assert_eq!(stat, Stat { pid: 4242, zombie: false, pgrp: 4242, session: 4000, start: 98765 });
        assert!(parse_stat(1, "1 (x) Z 0 1 1 0").is_none(), "a short line is refused");
        assert!(parse_stat(1, "no parenthesis").is_none());
    }

    /// Starts `sh -c 'sleep 30 & sleep 30'` in its own group and waits for both sleeps.
    fn leftover_group() -> (std::process::Child, GroupRecord) {
        group_of("sleep 30 & sleep 30")
    }

    /// Starts `script` (a shell and two processes) in its own group and waits for all three.
    fn group_of(script: &str) -> (std::process::Child, GroupRecord) {
        let mut command = Command::new("sh");
        command.args(["-c", script]).process_group(0).stdout(Stdio::null());
        let child = command.spawn().expect("spawn sh");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits");
        let record = GroupRecord::of_leader(pid).expect("a record of the new group");
        let deadline = Instant::now() + Duration::from_secs(5);
        while record.members().len() < 3 && Instant::now() < deadline {
            thread::sleep(SWEEP_TICK);
        }
        (child, record)
    }

    #[test]
    fn a_recorded_group_is_found_and_ended_whole() {
        let (mut child, record) = leftover_group();
        let members = record.members();
        assert_eq!(members.len(), 3, "sh and its two sleeps: {members:?}");
        assert!(members.contains(&record.pgid));
        let started = Instant::now();
        assert_eq!(end_groups(std::slice::from_ref(&record), ORPHAN_GRACE), 3);
        assert!(started.elapsed() < ORPHAN_GRACE, "SIGTERM was enough: {:?}", started.elapsed());
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !record.members().is_empty() && Instant::now() < deadline {
            thread::sleep(SWEEP_TICK);
        }
        assert_eq!(record.members(), Vec::<libc::pid_t>::new());
    }

    #[test]
    fn a_group_whose_ids_do_not_match_is_never_signalled() {
        let (mut child, record) = leftover_group();
        let later = GroupRecord { leader_start: record.leader_start + 1, ..record.clone() };
        let other_boot = GroupRecord { boot_id: "another boot".into(), ..record.clone() };
        let other_session = GroupRecord { session: record.session + 1, ..record.clone() };
        for stranger in [later, other_boot, other_session] {
            assert_eq!(stranger.members(), Vec::<libc::pid_t>::new(), "{stranger:?}");
            assert_eq!(end_groups(&[stranger], Duration::ZERO), 0);
        }
        assert_eq!(record.members().len(), 3, "nothing was signalled");
        end_groups(&[record], Duration::ZERO);
        let _ = child.wait();
    }

    #[test]
    fn a_group_ignoring_sigterm_is_killed_after_the_grace() {
        let (mut child, record) = group_of("trap '' TERM; sleep 30 & sleep 30");
        assert_eq!(record.members().len(), 3);
        let grace = Duration::from_millis(300);
        let started = Instant::now();
        assert_eq!(end_groups(std::slice::from_ref(&record), grace), 3);
        let took = started.elapsed();
        assert!(took >= grace && took < grace + Duration::from_secs(1), "{took:?}");
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !record.members().is_empty() && Instant::now() < deadline {
            thread::sleep(SWEEP_TICK);
        }
        assert_eq!(record.members(), Vec::<libc::pid_t>::new());
    }
}
