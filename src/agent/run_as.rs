//! Running a task's process as another user (task feature `user`): which users an agent may
//! switch to (its `--allow-user` list, empty by default), looking the user up, and the switch
//! itself (supplementary groups, group, user) in the child between fork and exec.
//!
//! A task asking for the agent's own user runs as it is. Any other user must be in the list, and
//! the agent must run as root; otherwise the task fails without running, saying which flag or
//! condition is missing.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Uid, User};

/// The identity a task's process takes, looked up before the process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User name (for `USER` and `LOGNAME`).
    pub name: String,
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id.
    pub gid: libc::gid_t,
    /// Every group the user belongs to, the primary one included.
    pub groups: Vec<libc::gid_t>,
    /// Home directory (for `HOME`, and the working directory when the task names none).
    pub home: PathBuf,
}

/// Decides how a task asking to run as `asked` runs on an agent whose effective uid is `euid`
/// and which allows `allowed`: `None` to run as the agent's own user, the identity to switch
/// to, or why the task cannot run.
pub fn resolve(asked: &str, allowed: &[String], euid: libc::uid_t) -> Result<Option<RunAs>, String> {
    let found = look_up(asked)?;
    if found.as_ref().is_some_and(|user| user.uid.as_raw() == euid) {
        return Ok(None);
    }
    if !allowed.iter().any(|name| name == asked) {
        return Err(format!(
            "user {asked:?} is not allowed on this agent: start the agent with --allow-user {asked} \
             (it runs tasks as another user only when allowed, and only as root)"
        ));
    }
    let Some(user) = found else {
        return Err(format!("user {asked:?} does not exist on this host"));
    };
    if euid != 0 {
        return Err(format!(
            "cannot run as user {asked:?}: the agent runs as uid {euid}, not root, so it cannot switch user"
        ));
    }
    identity(user).map(Some)
}

/// The user named `asked`, or with uid `asked` when it is a number.
fn look_up(asked: &str) -> Result<Option<User>, String> {
    let found = match asked.parse::<libc::uid_t>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(asked),
    };
    found.map_err(|e| format!("cannot look up user {asked:?} on this host: {e}"))
}

fn identity(user: User) -> Result<RunAs, String> {
    let name = CString::new(user.name.as_bytes())
        .map_err(|_| format!("user name {:?} holds a NUL byte", user.name))?;
    let groups = nix::unistd::getgrouplist(&name, user.gid)
        .map_err(|e| format!("cannot list the groups of user {:?}: {e}", user.name))?;
    Ok(RunAs {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
        home: user.dir,
    })
}

impl RunAs {
    /// Makes `command` run as this user: `HOME`, `USER` and `LOGNAME` are the user's (a task's
    /// own environment, applied after, may still set them), the working directory is the home
    /// directory (or `/` when it is missing) unless the task names one later, and the child
    /// drops to the user's groups, group and user before exec. Must be called before any other
    /// pre-exec hook that the switch would undo (the parent-death signal is cleared by a
    /// change of user, so it is set after this one).
    pub fn apply(&self, command: &mut Command) {
        command.env("HOME", &self.home).env("USER", &self.name).env("LOGNAME", &self.name);
        let start_dir = if self.home.is_dir() { self.home.as_path() } else { Path::new("/") };
        command.current_dir(start_dir);
        let (uid, gid, groups) = (self.uid, self.gid, self.groups.clone());
        let hook = move || {
            // SAFETY: setgroups, setgid and setuid are system calls, safe between fork and exec;
            // `groups` was built before the fork and is only read here.
            let switched = unsafe {
                libc::setgroups(groups.len(), groups.as_ptr()) == 0
                    && libc::setgid(gid) == 0
                    && libc::setuid(uid) == 0
            };
            if switched { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        };
        // SAFETY: the hook allocates nothing and takes no lock (see above); a failure makes
        // spawn return the error, so the command never runs with the agent's identity.
        unsafe { command.pre_exec(hook) };
    }
}

/// The agent's effective user id.
pub fn effective_uid() -> libc::uid_t {
    Uid::effective().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_agents_own_user_needs_no_allow_list() {
        let euid = effective_uid();
        let me = User::from_uid(Uid::from_raw(euid)).ok().flatten().map(|u| u.name);
        if let Some(name) = me {
            assert_eq!(resolve(&name, &[], euid), Ok(None));
        }
        assert_eq!(resolve(&euid.to_string(), &[], euid), Ok(None));
    }

    #[test]
    fn another_user_needs_the_allow_list_and_root() {
        let refused = resolve("nobody", &[], 0).unwrap_err();
        assert!(refused.contains("--allow-user nobody"), "{refused}");
        let not_root = resolve("nobody", &allowed(&["nobody"]), 1234).unwrap_err();
        assert!(not_root.contains("not root"), "{not_root}");
        let missing = resolve("no-such-user-here", &allowed(&["no-such-user-here"]), 0).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
    }

    #[test]
    fn an_allowed_user_is_looked_up_with_its_groups() {
        let Some(run_as) = resolve("nobody", &allowed(&["nobody"]), 0).unwrap() else {
            panic!("nobody is not the root user");
        };
        let nobody = User::from_name("nobody").unwrap().unwrap();
        assert_eq!((run_as.uid, run_as.gid), (nobody.uid.as_raw(), nobody.gid.as_raw()));
        assert!(run_as.groups.contains(&run_as.gid), "{run_as:?}");
        assert_eq!(run_as.name, "nobody");
    }
}
