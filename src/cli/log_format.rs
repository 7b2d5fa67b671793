//! How `orange server` and `orange agent` write their log lines: `text` (the default: readable,
//! in colour on a terminal) or `json` (one JSON object per event and line, for log shippers),
//! from `--log-format` (typed or from a config file) or else `ORANGE_LOG_FORMAT`.

/// Environment variable naming the log format when `--log-format` is not given.
pub const ENV_LOG_FORMAT: &str = "ORANGE_LOG_FORMAT";
/// The flag naming the log format.
const FLAG: &str = "--log-format";

/// A log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`.
    Json,
}

impl LogFormat {
    /// Reads `text` or `json`.
    pub fn parse(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{FLAG}: {other:?} is not a log format; use text or json")),
        }
    }

    /// The format `args` (argv without the program name) and `env_value` (of
    /// [`ENV_LOG_FORMAT`]) ask for; the flag wins. A value that does not parse gives the default
    /// here: the flag's own check then refuses it with a message.
    pub fn asked(args: &[String], env_value: Option<&str>) -> LogFormat {
        let from_flag = args.iter().enumerate().find_map(|(i, arg)| {
            if arg == FLAG {
                args.get(i + 1).map(String::as_str)
            } else {
                arg.strip_prefix(FLAG).and_then(|rest| rest.strip_prefix('='))
            }
        });
        LogFormat::chosen(from_flag, env_value)
    }

    /// The format the flag's value `flag` (typed, or from a config file) and `env_value` ask
    /// for; the flag wins, and a value that does not parse gives the default.
    pub fn chosen(flag: Option<&str>, env_value: Option<&str>) -> LogFormat {
        flag.or(env_value).and_then(|text| LogFormat::parse(text).ok()).unwrap_or_default()
    }
}

/// Checks the `--log-format` flag of `orange server` or `orange agent`.
pub fn check_flag(value: Option<&str>) -> anyhow::Result<()> {
    match value.map(LogFormat::parse) {
        Some(Err(e)) => Err(super::argv::usage(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn the_flag_wins_over_the_environment_and_text_is_the_default() {
        assert_eq!(LogFormat::asked(&args(&["server", "--data", "d"]), None), LogFormat::Text);
        assert_eq!(LogFormat::asked(&args(&["server"]), Some("json")), LogFormat::Json);
        assert_eq!(
            LogFormat::asked(&args(&["agent", "--log-format", "json"]), Some("text")),
            LogFormat::Json
        );
        assert_eq!(LogFormat::asked(&args(&["agent", "--log-format=text"]), Some("json")), LogFormat::Text);
        assert_eq!(LogFormat::asked(&args(&["agent", "--log-format", "xml"]), None), LogFormat::Text);
        assert!(check_flag(Some("xml")).unwrap_err().to_string().contains("use text or json"));
        assert!(check_flag(Some("json")).is_ok() && check_flag(None).is_ok());
    }
}
