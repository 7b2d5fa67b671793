//! Every limit and syntax rule that more than one part applies, defined once next to its check
//! and its error message: labels, task types, durations, the sizes and counts of an enqueue or a
//! job, token lifetimes. The server enforces them, the agent and the CLI check the same rules
//! before sending, so what one side accepts the other does too. `limit_table` lists every limit
//! for SECURITY.md.

use std::collections::BTreeMap;

/// The start of an untrusted value, for an error message: at most 40 characters.
pub fn shown(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Longest label key.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 256;
/// Most labels an agent may carry, or an agent list may filter on.
pub const MAX_LABELS: usize = 64;
/// Most labels one job's target selection may name.
pub const MAX_TARGET_LABELS: usize = 32;
/// Longest task type.
pub const MAX_TASK_TYPE_LEN: usize = 64;
/// Longest task timeout an operator may ask for.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// Longest time to live of a queued task.
pub const MAX_TTL_SECS: u64 = 365 * 24 * 3600;
/// Longest an enrollment token may work.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;
/// Most tasks queued for one agent.
pub const MAX_QUEUED_PER_AGENT: usize = 10_000;
/// Most app ids one enqueue or one job may name.
pub const MAX_NAMED_TARGETS: usize = 10_000;
/// Most payload bytes one enqueue (or one job's window) may store: payload × targets.
pub const MAX_ENQUEUE_BYTES: usize = 256 * 1024 * 1024;
/// Most bytes of standard input one task may carry (`task run` forwards its stdin).
pub const MAX_STDIN_BYTES: usize = 16 * 1024 * 1024;
/// Largest body of an enqueue: an operator request and a task's stdin as base64.
pub const MAX_ENQUEUE_BODY: usize = MAX_ADMIN_BODY + MAX_STDIN_BYTES.div_ceil(3) * 4;
/// Most agents one job may target.
pub const MAX_JOB_TARGETS: usize = 100_000;
/// Largest operator API request body.
pub const MAX_ADMIN_BODY: usize = 1024 * 1024;
/// Largest request head (request line and headers) a server reads into memory.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Failed attempts (bad signatures, wrong agent secrets, wrong admin tokens) one source may
/// make per minute before its requests are refused unverified (all but those of agents whose
/// last good request came from it).
pub const MAX_FAILURES_PER_MINUTE: u32 = 30;
/// Failed attempts for one app id from one source per minute.
pub const MAX_FAILURES_PER_APP_ID_SOURCE: u32 = 10;
/// Failed attempts for one app id from all sources together per minute.
pub const MAX_FAILURES_PER_APP_ID: u32 = 30;
/// Wrong admin tokens from all sources together per minute before every wrong one is answered
/// 429 (a right token is never refused).
pub const MAX_WRONG_ADMIN_TOKENS_PER_MINUTE: u32 = 300;
/// Most agents waiting for an operator to accept them.
pub const MAX_PENDING: usize = 1000;
/// Most environment variables one task may set (`--env`).
pub const MAX_ENV_VARS: usize = 64;
/// Longest environment variable name.
pub const MAX_ENV_NAME_LEN: usize = 128;
/// Most bytes of a task's environment: every name and value together.
pub const MAX_ENV_BYTES: usize = 32 * 1024;
/// Longest working directory of a task (`--cwd`).
pub const MAX_CWD_LEN: usize = 4096;
/// Longest user name a task may ask to run as (`--user`).
pub const MAX_USER_LEN: usize = 32;
/// Prefix of the variables the agent owns (the task id, secrets): a task cannot set them.
pub const RESERVED_ENV_PREFIX: &str = "ORANGE_";

/// Checks one label: a key of 1 to [`MAX_LABEL_KEY_LEN`] characters of `A-Z a-z 0-9 . _ / -`
/// and a value of at most [`MAX_LABEL_VALUE_LEN`] bytes without control characters.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let key_ok = key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if key.is_empty() || key.len() > MAX_LABEL_KEY_LEN || !key_ok {
        return Err(format!(
            "label {:?}: key must be 1 to {MAX_LABEL_KEY_LEN} characters of A-Z a-z 0-9 . _ / -",
            shown(key)
        ));
    }
    if value.len() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
        return Err(format!(
            "label {:?}: value must be at most {MAX_LABEL_VALUE_LEN} bytes without control characters",
            shown(key)
        ));
    }
    Ok(())
}

/// Checks a set of labels: at most `most` of them, each by [`check_label`].
pub fn check_labels(labels: &BTreeMap<String, String>, most: usize) -> Result<(), String> {
    if labels.len() > most {
        return Err(format!("{} labels given; the limit is {most}", labels.len()));
    }
    labels.iter().try_for_each(|(key, value)| check_label(key, value))
}

/// Parses one `k=v` label and checks it.
pub fn parse_label(text: &str) -> Result<(&str, &str), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("label {:?} is not k=v", shown(text)));
    };
    check_label(key, value)?;
    Ok((key, value))
}

/// Parses `k=v` labels into a map: each checked, no key twice, at most `most`.
pub fn parse_labels(texts: &[String], most: usize) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for text in texts {
        let (key, value) = parse_label(text)?;
        if map.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("label {:?}: key {key:?} is given twice", shown(text)));
        }
    }
    check_labels(&map, most)?;
    Ok(map)
}

/// Checks one environment variable of a task: a name of 1 to [`MAX_ENV_NAME_LEN`] characters
/// of `A-Z a-z 0-9 _`, not starting with a digit nor with [`RESERVED_ENV_PREFIX`], and a value
/// without NUL bytes.
pub fn check_env_var(name: &str, value: &str) -> Result<(), String> {
    let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if name.is_empty()
        || name.len() > MAX_ENV_NAME_LEN
        || !plain
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!(
            "environment variable {:?}: the name must be 1 to {MAX_ENV_NAME_LEN} characters of A-Z a-z 0-9 _, \
             not starting with a digit",
            shown(name)
        ));
    }
    if name.starts_with(RESERVED_ENV_PREFIX) {
        return Err(format!(
            "environment variable {:?}: names starting with {RESERVED_ENV_PREFIX} belong to the agent",
            shown(name)
        ));
    }
    if value.contains('\0') {
        return Err(format!("environment variable {:?}: the value holds a NUL byte", shown(name)));
    }
    Ok(())
}

/// Checks a task's environment: at most [`MAX_ENV_VARS`] variables of at most
/// [`MAX_ENV_BYTES`] in all, each by [`check_env_var`].
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    if env.len() > MAX_ENV_VARS {
        return Err(format!("{} environment variables given; the limit is {MAX_ENV_VARS}", env.len()));
    }
    let bytes: usize = env.iter().map(|(name, value)| name.len() + value.len()).sum();
    if bytes > MAX_ENV_BYTES {
        return Err(format!("the environment is {bytes} bytes; the limit is {MAX_ENV_BYTES}"));
    }
    env.iter().try_for_each(|(name, value)| check_env_var(name, value))
}

/// Parses `NAME=value` texts (`--env`, repeatable) into a task's environment: each checked, no
/// name twice, within the limits.
pub fn parse_env(texts: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    for text in texts {
        let Some((name, value)) = text.split_once('=') else {
            return Err(format!("environment variable {:?} is not NAME=value", shown(text)));
        };
        check_env_var(name, value)?;
        if env.insert(name.to_owned(), value.to_owned()).is_some() {
            return Err(format!("environment variable {name:?} is given twice"));
        }
    }
    check_env(&env)?;
    Ok(env)
}

/// Checks a task's working directory: an absolute path of at most [`MAX_CWD_LEN`] bytes
/// without control characters. Whether it exists is for the agent to find out.
pub fn check_cwd(cwd: &str) -> Result<(), String> {
    if !cwd.starts_with('/') || cwd.len() > MAX_CWD_LEN || cwd.chars().any(char::is_control) {
        return Err(format!(
            "working directory {:?} must be an absolute path of at most {MAX_CWD_LEN} bytes without control \
             characters",
            shown(cwd)
        ));
    }
    Ok(())
}

/// Checks the user a task asks to run as: 1 to [`MAX_USER_LEN`] characters of
/// `A-Z a-z 0-9 . _ -`, not starting with `-`, or a numeric uid. Whether the user exists, and
/// may be used, is for the agent to decide.
pub fn check_user(user: &str) -> Result<(), String> {
    let plain = user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if user.is_empty() || user.len() > MAX_USER_LEN || !plain || user.starts_with('-') {
        return Err(format!(
            "user {:?} must be 1 to {MAX_USER_LEN} characters of A-Z a-z 0-9 . _ -, not starting with '-'",
            shown(user)
        ));
    }
    Ok(())
}

/// Checks a task type: 1 to [`MAX_TASK_TYPE_LEN`] characters of `A-Z a-z 0-9 . _ -`, not
/// starting with a dot, so that it names a plain file inside an agent's handlers directory
/// and nothing else.
pub fn check_task_type(task_type: &str) -> Result<(), String> {
    let plain = task_type.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if task_type.is_empty() || task_type.len() > MAX_TASK_TYPE_LEN || !plain || task_type.starts_with('.') {
        return Err(format!(
            "task type {:?} must be 1 to {MAX_TASK_TYPE_LEN} letters, digits, '.', '_' or '-', not starting \
             with '.'",
            shown(task_type)
        ));
    }
    Ok(())
}

/// Checks a number of seconds (a timeout, a time to live) named `name` against 1 to `most`.
pub fn check_secs(name: &str, secs: u64, most: u64) -> Result<u64, String> {
    if secs == 0 || secs > most {
        return Err(format!("{name} must be between 1 and {most} seconds"));
    }
    Ok(secs)
}

/// The duration syntax, for error messages.
pub const DURATION_LIKE: &str = "24h, 30m, 7d or 3600 (seconds)";

/// Parses a duration: a whole number with a unit `s`, `m`, `h` or `d` (`30m`, `24h`, `7d`), or
/// plain seconds (`3600`), into seconds between 1 and `most`; `what` names the bounded thing
/// in the error (e.g. "a token may work").
pub fn parse_duration(text: &str, most: u64, what: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("the duration is empty; give one like {DURATION_LIKE}"));
    }
    let (digits, unit) = match trimmed.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&trimmed[..at], c),
        _ => (trimmed, 's'),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a duration like {DURATION_LIKE}"));
    }
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit {unit:?}; use s, m, h or d, like {DURATION_LIKE}"
            ));
        }
    };
    let too_long = || format!("{text:?} is longer than {what} ({})", days_or_secs(most));
    let secs = digits.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)).ok_or_else(too_long)?;
    match secs {
        0 => Err(format!("{text:?} is zero; the least is 1 second")),
        secs if secs > most => Err(too_long()),
        secs => Ok(secs),
    }
}

fn days_or_secs(secs: u64) -> String {
    if secs % 86_400 == 0 { format!("{}d", secs / 86_400) } else { format!("{secs}s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(texts: &[&str]) -> Result<BTreeMap<String, String>, String> {
        parse_labels(&texts.iter().map(|s| s.to_string()).collect::<Vec<_>>(), MAX_LABELS)
    }

    #[test]
    fn labels_are_k_v_with_a_plain_key_and_the_error_names_the_label() {
        let ok = labels(&["env=prod", "rack=a=1", "empty=", "k8s.io/zone=a"]).unwrap();
        assert_eq!(ok.get("rack").map(String::as_str), Some("a=1"));
        assert_eq!(ok.get("empty").map(String::as_str), Some(""));
        assert_eq!(labels(&["novalue"]).unwrap_err(), "label \"novalue\" is not k=v");
        assert!(labels(&["=v"]).unwrap_err().starts_with("label \"\": key must be"));
        assert!(labels(&["a b=v"]).unwrap_err().starts_with("label \"a b\": key must be"));
        assert!(labels(&[&format!("{}=v", "k".repeat(64))]).unwrap_err().contains("key must be 1 to 63"));
        assert!(labels(&["k=a\nb"]).unwrap_err().starts_with("label \"k\": value must be"));
        assert_eq!(labels(&["k=1", "k=2"]).unwrap_err(), "label \"k=2\": key \"k\" is given twice");
        let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        assert_eq!(parse_labels(&many, MAX_LABELS).unwrap_err(), "65 labels given; the limit is 64");
    }

    #[test]
    fn env_is_name_value_with_plain_names_and_no_reserved_ones() {
        let env = |texts: &[&str]| parse_env(&texts.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let ok = env(&["A=b", "PATH_2=x=y", "EMPTY="]).unwrap();
        assert_eq!(ok.get("PATH_2").map(String::as_str), Some("x=y"));
        assert_eq!(ok.get("EMPTY").map(String::as_str), Some(""));
        assert_eq!(env(&["A"]).unwrap_err(), "environment variable \"A\" is not NAME=value");
        assert!(env(&["1A=b"]).unwrap_err().contains("the name must be"));
        assert!(env(&["A-B=b"]).unwrap_err().contains("the name must be"));
        assert!(env(&["ORANGE_SECRET=x"]).unwrap_err().contains("belong to the agent"));
        assert!(env(&["A=b\0c"]).unwrap_err().contains("NUL"));
        assert_eq!(env(&["A=1", "A=2"]).unwrap_err(), "environment variable \"A\" is given twice");
        let many: Vec<String> = (0..=MAX_ENV_VARS).map(|i| format!("V{i}=x")).collect();
        assert!(parse_env(&many).unwrap_err().contains("the limit is 64"));
        let big = vec![format!("A={}", "x".repeat(MAX_ENV_BYTES))];
        assert!(parse_env(&big).unwrap_err().contains("bytes; the limit is"));
    }

    #[test]
    fn a_working_directory_is_an_absolute_path() {
        assert!(check_cwd("/tmp").is_ok());
        for good in ["nobody", "www-data", "svc.app_1", "1000"] {
            assert!(check_user(good).is_ok(), "{good:?}");
        }
        for bad in ["", "-x", "a b", "root\n", "a/b", &"u".repeat(MAX_USER_LEN + 1)] {
            assert!(check_user(bad).unwrap_err().contains("must be 1 to 32"), "{bad:?}");
        }
        for bad in ["tmp", "", "/a\nb", &format!("/{}", "a".repeat(MAX_CWD_LEN))] {
            assert!(check_cwd(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn task_types_name_a_plain_file() {
        assert!(check_task_type("shell").is_ok());
        assert!(check_task_type(&"a".repeat(MAX_TASK_TYPE_LEN)).is_ok());
        for bad in ["", "../../bin/sh", ".hidden", "a b", &"a".repeat(MAX_TASK_TYPE_LEN + 1)] {
            assert!(check_task_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        let token = |t: &str| parse_duration(t, MAX_TOKEN_TTL_SECS, "a token may work");
        assert_eq!(token("3600"), Ok(3600));
        assert_eq!(token(" 24h "), Ok(86_400));
        assert_eq!(token("365d"), Ok(MAX_TOKEN_TTL_SECS));
        assert_eq!(token("366d").unwrap_err(), "\"366d\" is longer than a token may work (365d)");
        assert!(token("0").unwrap_err().contains("is zero"));
        assert!(token("5w").unwrap_err().contains("unknown unit 'w'"));
        assert!(token("h").unwrap_err().contains("is not a duration like 24h"));
    }
}
