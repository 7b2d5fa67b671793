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

    #[test]
    fn the_flag_wins_over_the_environment_and_text_is_the_default() {
        assert_eq!(LogFormat::chosen(None, None), LogFormat::Text);
        assert_eq!(LogFormat::chosen(None, Some("json")), LogFormat::Json);
        assert_eq!(LogFormat::chosen(Some("json"), Some("text")), LogFormat::Json);
        assert_eq!(LogFormat::chosen(Some("text"), Some("json")), LogFormat::Text);
        assert_eq!(LogFormat::chosen(Some("xml"), None), LogFormat::Text);
        assert!(check_flag(Some("xml")).unwrap_err().to_string().contains("use text or json"));
        assert!(check_flag(Some("json")).is_ok() && check_flag(None).is_ok());
    }
}
