//! Flag values checked by the rules in `protocol` (timeouts, times to live, task ids, a task's
//! `--env` and `--cwd`), with the flag named in the message, and the command words after `--`
//! turned into a shell command line; every command that takes such a flag uses these.

use std::collections::BTreeMap;

use anyhow::Result;

use super::argv::usage;

use crate::protocol::limits::{check_cwd, check_user, parse_env};

use crate::protocol::limits::{MAX_TIMEOUT_SECS, MAX_TTL_SECS, check_secs};
use crate::protocol::task::parse_task_id;

/// Checks `--timeout` (seconds), if given.
pub fn check_timeout(timeout: Option<u64>) -> Result<Option<u64>> {
    timeout.map(|secs| check_secs("--timeout", secs, MAX_TIMEOUT_SECS)).transpose().map_err(usage)
}

/// Checks `--ttl` (seconds), if given.
pub fn check_ttl(ttl: Option<u64>) -> Result<Option<u64>> {
    ttl.map(|secs| check_secs("--ttl", secs, MAX_TTL_SECS)).transpose().map_err(usage)
}

/// Task ids are UUIDs; checking here gives a clear message and keeps the id a plain path segment.
pub fn check_task_id(id: &str) -> Result<String> {
    let parsed = parse_task_id(id).map_err(usage)?;
    Ok(parsed.hyphenated().to_string())
}

/// The `--env NAME=value` flags (repeatable) as a task's environment.
pub fn check_env(texts: &[String]) -> Result<BTreeMap<String, String>> {
    parse_env(texts).map_err(|e| usage(format!("--env: {e}")))
}

/// The `--secret-env NAME` flags (repeatable): each value read from orange's own environment,
/// checked like `--env`.
pub fn check_secret_env(names: &[String]) -> Result<BTreeMap<String, String>> {
    let mut texts = Vec::with_capacity(names.len());
    for name in names {
        let Some(value) = std::env::var_os(name) else {
            return Err(usage(format!("--secret-env {name}: {name} is not set in orange's environment")));
        };
        let Some(value) = value.to_str() else {
            return Err(usage(format!("--secret-env {name}: the value of {name} is not UTF-8")));
        };
        texts.push(format!("{name}={value}"));
    }
    // The message names the variable, never its value.
    parse_env(&texts).map_err(|e| usage(format!("--secret-env: {}", e.split(':').next().unwrap_or_default())))
}

/// The `--cwd DIR` flag: an absolute path (whether it exists is checked on the host).
pub fn check_cwd_flag(cwd: Option<String>) -> Result<Option<String>> {
    if let Some(dir) = &cwd {
        check_cwd(dir).map_err(|e| usage(format!("--cwd: {e}")))?;
    }
    Ok(cwd)
}

/// The `--user NAME` flag: a plain user name or uid (whether the host allows it is up to its
/// agent's `--allow-user`).
pub fn check_user_flag(user: Option<String>) -> Result<Option<String>> {
    if let Some(name) = &user {
        check_user(name).map_err(|e| usage(format!("--user: {e}")))?;
    }
    Ok(user)
}

/// The command words after `--` as the command line a shell task runs with `sh -c`: one word
/// is a shell script, taken as it is (`-- 'tar x -C /srv && echo ok'`); several are an argv, each
/// word quoted so that the remote shell sees exactly those words (`-- sh -c 'echo a; echo b'`).
/// `None` when there is no command (no words, or only blanks).
pub fn command_line(words: &[String]) -> Option<String> {
    let line = match words {
        [script] => script.clone(),
        words => words.iter().map(|word| shell_quote(word)).collect::<Vec<_>>().join(" "),
    };
    (!line.trim().is_empty()).then_some(line)
}

/// `word` as one POSIX shell word: left as it is when made only of characters no shell treats
/// specially (`=` is not among them: `A=b` first would be an assignment), else in single quotes,
/// each `'` written `'\''`.
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-+/.,:@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| word.to_string()).collect()
    }

    #[test]
    fn one_word_is_a_script_and_several_are_quoted_words() {
        assert_eq!(command_line(&words(&["echo hi && id"])).unwrap(), "echo hi && id");
        assert_eq!(command_line(&words(&["ls", "-la", "/tmp dir"])).unwrap(), "ls -la '/tmp dir'");
        assert_eq!(command_line(&words(&["sh", "-c", "echo a; echo b"])).unwrap(), "sh -c 'echo a; echo b'");
        assert_eq!(
            command_line(&words(&["printf", "%s\\n", "it's", ""])).unwrap(),
            "printf '%s\\n' 'it'\\''s' ''"
        );
        assert_eq!(command_line(&[]), None);
        assert_eq!(command_line(&words(&[" "])), None);
        assert_eq!(command_line(&words(&["", ""])).unwrap(), "'' ''");
        assert_eq!(command_line(&words(&["A=b", "~", "$HOME"])).unwrap(), "'A=b' '~' '$HOME'");
    }

    #[test]
    fn zero_or_too_long_timeouts_and_ttls_are_refused() {
        let timeout = check_timeout(Some(0)).unwrap_err().to_string();
        assert_eq!(timeout, "--timeout must be between 1 and 2592000 seconds");
        let ttl = check_ttl(Some(MAX_TTL_SECS + 1)).unwrap_err().to_string();
        assert_eq!(ttl, "--ttl must be between 1 and 31536000 seconds");
        assert_eq!((check_timeout(None).unwrap(), check_ttl(Some(60)).unwrap()), (None, Some(60)));
    }

    #[test]
    fn task_ids_must_be_uuids() {
        const ID: &str = "0190a5e3-aaaa-7000-8000-000000000001";
        assert_eq!(check_task_id(ID).unwrap(), ID);
        assert_eq!(
            check_task_id("../agents").unwrap_err().to_string(),
            "\"../agents\" is not a task id (a UUID)"
        );
    }
}
