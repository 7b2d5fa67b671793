//! Task features: what a task needs of its agent beyond the original protocol (a working
//! directory, extra environment), and what an agent says it understands. An orange agent
//! announces its features with `register` and on every getTask ([`HEADER_FEATURES`]); the
//! original client and older orange agents announce none. A task that needs a feature is handed
//! only to an agent that announced it, so an agent never runs a task while silently ignoring
//! part of it.

use std::collections::BTreeMap;

use super::limits::shown;

/// The task carries extra environment variables (`env`).
pub const FEATURE_ENV: &str = "env";
/// The task carries a working directory (`cwd`).
pub const FEATURE_CWD: &str = "cwd";
/// The task carries bytes for its process's standard input (`stdin`).
pub const FEATURE_STDIN: &str = "stdin";
/// The task copies a file to or from the host (task types `file.put`, `file.get`).
pub const FEATURE_FILES: &str = "files";
/// The task names the user its process runs as (`user`).
pub const FEATURE_USER: &str = "user";
/// Every feature this build knows, sorted.
pub const KNOWN: [&str; 5] = [FEATURE_CWD, FEATURE_ENV, FEATURE_FILES, FEATURE_STDIN, FEATURE_USER];

/// An agent feature, not a task's: the agent takes several tasks from one getTask (up to its
/// announced capacity, at most [`MAX_TASKS_PER_POLL`], the rest in the first task's `more`) and
/// may report several tasks in one call ([`REPORT_TASKS_PATH`]). Agents that do not announce it
/// get one task per poll, as always.
///
/// [`MAX_TASKS_PER_POLL`]: super::wire::MAX_TASKS_PER_POLL
/// [`REPORT_TASKS_PATH`]: super::wire::REPORT_TASKS_PATH
pub const AGENT_BATCH: &str = "batch";

/// getTask header of orange agents: their features, comma separated (absent: none).
pub const HEADER_FEATURES: &str = "X-ORANGE-FEATURES";
/// Most features an agent may announce.
pub const MAX_FEATURES: usize = 32;
/// Longest feature name.
pub const MAX_FEATURE_LEN: usize = 32;

/// Checks announced features: at most [`MAX_FEATURES`], each 1 to [`MAX_FEATURE_LEN`]
/// characters of `a-z 0-9 _ -`. Names this build does not know are allowed (a newer agent).
pub fn check_features(features: &[String]) -> Result<(), String> {
    if features.len() > MAX_FEATURES {
        return Err(format!("{} features announced; the limit is {MAX_FEATURES}", features.len()));
    }
    for name in features {
        let plain = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
        if name.is_empty() || name.len() > MAX_FEATURE_LEN || !plain {
            return Err(format!(
                "feature {:?} must be 1 to {MAX_FEATURE_LEN} characters of a-z 0-9 _ -",
                shown(name)
            ));
        }
    }
    Ok(())
}

/// Reads the value of [`HEADER_FEATURES`]: names separated by commas (spaces ignored), checked,
/// sorted and without repeats.
pub fn parse_header(text: &str) -> Result<Vec<String>, String> {
    let mut features: Vec<String> =
        text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    features.sort();
    features.dedup();
    check_features(&features)?;
    Ok(features)
}

/// The value of [`HEADER_FEATURES`] announcing `features`.
pub fn header_value(features: &[String]) -> String {
    features.join(",")
}

/// What a task asks of its agent beyond running its payload: the parts that need a feature.
#[derive(Debug, Clone, Copy)]
pub struct TaskAsks<'a> {
    /// Its task type (a file copy's type needs [`FEATURE_FILES`]).
    pub task_type: &'a str,
    /// Environment variables added to its process.
    pub env: &'a BTreeMap<String, String>,
    /// Working directory of its process.
    pub cwd: Option<&'a str>,
    /// Bytes for its process's standard input (empty: none).
    pub stdin: &'a [u8],
    /// User its process runs as.
    pub user: Option<&'a str>,
}

impl TaskAsks<'_> {
    /// The features an agent must have announced to be given such a task, sorted.
    pub fn required(&self) -> Vec<&'static str> {
        let wanted = [
            (self.cwd.is_some(), FEATURE_CWD),
            (!self.env.is_empty(), FEATURE_ENV),
            (super::files::is_file_task(self.task_type), FEATURE_FILES),
            (!self.stdin.is_empty(), FEATURE_STDIN),
            (self.user.is_some(), FEATURE_USER),
        ];
        wanted.into_iter().filter_map(|(asked, feature)| asked.then_some(feature)).collect()
    }
}

/// The features of `required` that `announced` lacks.
pub fn missing<'a>(required: &[&'a str], announced: &[String]) -> Vec<&'a str> {
    required.iter().copied().filter(|need| !announced.iter().any(|have| have == need)).collect()
}

/// Why a task needing `missing` features is not given to agent `app_id`.
pub fn refusal(app_id: &str, missing: &[&str]) -> String {
    let (noun, names) = match missing {
        [one] => ("feature", (*one).to_owned()),
        many => ("features", many.join(", ")),
    };
    format!(
        "agent {:?} does not support the task {noun} {names} (an original client or an older orange \
         agent announces none): upgrade its agent, or send the task without it",
        shown(app_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_a_sorted_checked_list() {
        assert_eq!(parse_header("env, cwd,env"), Ok(vec!["cwd".to_owned(), "env".to_owned()]));
        assert_eq!(parse_header(""), Ok(vec![]));
        assert!(parse_header("Env").unwrap_err().contains("a-z 0-9"));
        assert!(parse_header(&"x".repeat(MAX_FEATURE_LEN + 1)).is_err());
        let many: Vec<String> = (0..=MAX_FEATURES).map(|i| format!("f{i}")).collect();
        assert!(parse_header(&many.join(",")).unwrap_err().contains("the limit is 32"));
        assert_eq!(header_value(&["cwd".into(), "env".into()]), "cwd,env");
    }

    #[test]
    fn a_task_needs_the_features_of_what_it_asks() {
        let env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        let none = BTreeMap::new();
        let plain = TaskAsks { task_type: "shell", env: &none, cwd: None, stdin: b"", user: None };
        assert!(plain.required().is_empty());
        let all = TaskAsks {
            task_type: "file.put",
            env: &env,
            cwd: Some("/tmp"),
            stdin: b"x",
            user: Some("nobody"),
        };
        assert_eq!(all.required(), KNOWN);
        assert_eq!(TaskAsks { user: Some("www-data"), ..plain }.required(), [FEATURE_USER]);
    }

    #[test]
    fn missing_features_are_named_with_the_agent() {
        let announced = vec!["cwd".to_owned()];
        assert_eq!(missing(&[FEATURE_ENV, FEATURE_CWD], &announced), [FEATURE_ENV]);
        assert!(missing(&[FEATURE_CWD], &announced).is_empty());
        let text = refusal("web-1", &["env"]);
        assert!(text.starts_with("agent \"web-1\" does not support the task feature env"), "{text}");
        assert!(refusal("a", &["cwd", "env"]).contains("features cwd, env"));
    }
}
