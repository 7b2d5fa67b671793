//! `--config FILE` of `orange server` and `orange agent`: a TOML file whose keys are the
//! command's flags (`poll_window = 20` for `--poll-window 20`, `allow_shell = true` for a
//! switch, `label = ["role=web"]` for a repeatable flag). The file is turned into the
//! command-line words it stands for, put before the words typed, which win flag by flag.
//!
//! The keys are read from argh's definition of the command and each value is checked by the same
//! parser as its flag's, so every flag is a key, and a flag added to a command is a key of its
//! file with no edit here. Secrets are never values: a key such as `admin_token` whose
//! `admin_token_file` is a flag is refused, naming the `_file` key.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use argh::{FlagInfoKind, FromArgs, Optionality};

use super::Orange;
use super::argv::{closest, command_at};

/// Most bytes read from a configuration file (of the server, the agent or the CLI's profiles).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The flag that names the file; not a key of it (a file does not name another).
const CONFIG_FLAG: &str = "config";
/// Ending of the flags that name a file holding a secret.
const SECRET_FILE_SUFFIX: &str = "_file";

/// Reads a configuration file as text: at most [`MAX_CONFIG_BYTES`] of UTF-8, naming the file
/// when it cannot.
pub fn read_config_text(path: &Path) -> Result<String> {
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot read config file {shown}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read config file {shown}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        bail!("config file {shown} is larger than {} KiB, the most taken", MAX_CONFIG_BYTES / 1024);
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("config file {shown} is not UTF-8 text"))
}

/// The top-level table of the TOML file `path`; a syntax error or a key given twice is an error
/// naming the file (and, in TOML's words, the line and the key).
pub fn read_config_table(path: &Path) -> Result<toml::Table> {
    let text = read_config_text(path)?;
    toml::from_str(&text).map_err(|e| {
        anyhow!("config file {} is not valid TOML: {}", path.display(), e.to_string().trim_end())
    })
}

/// The key of a flag: its long name with `_` for `-` (`--poll-window` is `poll_window`).
pub fn key_of(flag: &str) -> String {
    flag.trim_start_matches("--").replace('-', "_")
}

/// How a flag takes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// A switch: present or not (`true` or `false` in a file).
    Switch,
    /// An option given at most once (a string or a number in a file).
    Once,
    /// An option that may be repeated (a list in a file).
    Repeated,
}

/// A flag of a command, as argh's definition of the command gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The long name, without `--`.
    pub name: String,
    /// How it takes values.
    pub arity: Arity,
}

impl Flag {
    /// Its key in a file.
    pub fn key(&self) -> String {
        key_of(&self.name)
    }
}

/// The flags of `orange COMMAND` that its `--help` lists, less `--help` itself: a switch, an
/// option, or an option that may be repeated.
pub fn command_flags(command: &str) -> Vec<Flag> {
    let Some(info) = command_at(&[command.to_owned()]) else { return Vec::new() };
    let flags = info.flags.iter().filter(|flag| !flag.hidden && flag.long != "--help");
    flags
        .map(|flag| {
            let arity = match (&flag.kind, &flag.optionality) {
                (FlagInfoKind::Switch, _) => Arity::Switch,
                (_, Optionality::Repeating | Optionality::Greedy) => Arity::Repeated,
                _ => Arity::Once,
            };
            Flag { name: flag.long.trim_start_matches("--").to_owned(), arity }
        })
        .collect()
}

/// What a value of a flag must be in a file, found by asking the flag's own parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    /// A string (paths, addresses, names, and values only the parser knows the syntax of).
    Text,
    /// A whole number.
    Integer,
    /// A number, whole or not.
    Number,
}

/// Why argh refuses `--flag word` for `orange COMMAND`, if it does; other complaints (a
/// required flag missing) are not about the value.
fn refusal(command: &str, flag: &str, word: &str) -> Option<String> {
    let option = format!("--{flag}");
    match Orange::from_args(&["orange"], &[command, &option, word]) {
        Ok(_) => None,
        Err(exit) if exit.output.starts_with("Error parsing option") => {
            let reason = exit.output.lines().next().unwrap_or_default();
            Some(reason.rsplit_once("': ").map_or(reason, |(_, why)| why).to_owned())
        }
        Err(_) => None,
    }
}

/// The kind of value `--flag` of `orange COMMAND` takes: text when its parser takes a word,
/// a number when it refuses a word but takes `1`.
fn value_kind(command: &str, flag: &str) -> ValueKind {
    if refusal(command, flag, "x").is_none() || refusal(command, flag, "1").is_some() {
        ValueKind::Text
    } else if refusal(command, flag, "1.5").is_none() {
        ValueKind::Number
    } else {
        ValueKind::Integer
    }
}

/// One value as the word of its flag, if its TOML type is the one the flag takes.
fn scalar_word(value: &toml::Value, kind: ValueKind) -> Result<String, String> {
    match (kind, value) {
        (ValueKind::Text, toml::Value::String(text)) => Ok(text.clone()),
        (ValueKind::Integer | ValueKind::Number, toml::Value::Integer(number)) => Ok(number.to_string()),
        (ValueKind::Number, toml::Value::Float(number)) => Ok(number.to_string()),
        (ValueKind::Text, other) => Err(format!("must be a string, not {}", a_type(other))),
        (ValueKind::Integer, other) => Err(format!("must be a whole number, not {}", a_type(other))),
        (ValueKind::Number, other) => Err(format!("must be a number, not {}", a_type(other))),
    }
}

/// The TOML type of `value` with its article, for messages.
pub(crate) fn a_type(value: &toml::Value) -> String {
    let name = value.type_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {name}")
}

/// The values of `flag` a file gives as `value`, as the words of the command line, each checked
/// by the flag's parser; the error says what is wrong with the value.
fn flag_words(command: &str, flag: &Flag, value: &toml::Value) -> Result<Vec<String>, String> {
    let option = format!("--{}", flag.name);
    let values: Vec<&toml::Value> = match (flag.arity, value) {
        (Arity::Switch, toml::Value::Boolean(on)) => return Ok(if *on { vec![option] } else { vec![] }),
        (Arity::Switch, other) => return Err(format!("must be true or false, not {}", a_type(other))),
        (Arity::Repeated, toml::Value::Array(items)) => items.iter().collect(),
        (Arity::Repeated, other) => {
            return Err(format!("must be a list, like {} = [...], not {}", flag.key(), a_type(other)));
        }
        (Arity::Once, value) => vec![value],
    };
    let kind = value_kind(command, &flag.name);
    let mut words = Vec::with_capacity(values.len() * 2);
    for value in values {
        let word = scalar_word(value, kind)?;
        if let Some(why) = refusal(command, &flag.name, &word) {
            return Err(format!("{word:?} is refused: {why}"));
        }
        words.extend([option.clone(), word]);
    }
    Ok(words)
}

/// The settings of one key of a file: its flag and the words it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The flag, without `--`.
    pub flag: String,
    /// The command-line words (`--flag value`, repeated for a list; none for `false`).
    pub words: Vec<String>,
}

/// The settings the file `path` gives `orange COMMAND`, whose flags are `flags`; every key
/// checked: unknown ones (with the closest key), secrets as values, and values of the wrong type
/// or that the flag's parser refuses are errors naming the key and the file.
pub fn file_settings(command: &str, flags: &[Flag], path: &Path) -> Result<Vec<Setting>> {
    let table = read_config_table(path)?;
    let in_file = |problem: String| anyhow!("config file {}: {problem}", path.display());
    let mut settings = Vec::with_capacity(table.len());
    for (key, value) in &table {
        let flag = flag_for_key(flags, key).map_err(in_file)?;
        let words = flag_words(command, flag, value).map_err(|why| in_file(format!("key {key:?} {why}")))?;
        settings.push(Setting { flag: flag.name.clone(), words });
    }
    Ok(settings)
}

/// The flag `key` stands for, or why it stands for none.
fn flag_for_key<'a>(flags: &'a [Flag], key: &str) -> Result<&'a Flag, String> {
    if key == CONFIG_FLAG {
        return Err(format!("key {key:?} is not taken: a config file does not name another"));
    }
    let keys: Vec<String> = flags.iter().map(Flag::key).filter(|k| k != CONFIG_FLAG).collect();
    let file_key = format!("{key}{SECRET_FILE_SUFFIX}");
    if keys.contains(&file_key) {
        return Err(format!(
            "key {key:?} would hold a secret, which a config file does not take; put the secret in a file \
             only orange's user can read and name that file with {file_key}"
        ));
    }
    flags.iter().find(|flag| flag.key() == key).ok_or_else(|| {
        let keys_are = format!("the command's flags, with _ for - ({})", keys.join(", "));
        unknown_key(key, &keys, &keys_are)
    })
}

/// The message for the key `key` of a config file, which is none of `keys`: the closest key if
/// one is close (`key` with `_` for `-` first), else what the keys are, as `keys_are` says.
pub(crate) fn unknown_key(key: &str, keys: &[impl AsRef<str>], keys_are: &str) -> String {
    let underscored = key.replace('-', "_");
    let near = if keys.iter().any(|known| known.as_ref() == underscored) {
        Some(underscored)
    } else {
        closest(key, keys)
    };
    match near {
        Some(near) => format!("unknown key {key:?}; did you mean {near:?}?"),
        None => format!("unknown key {key:?}; the keys are {keys_are}"),
    }
}

/// The flags typed at the command's own level: each `--flag` (and its value) up to the first
/// word that is neither (a subcommand, a positional, `--`).
fn typed_flags(words: &[String], flags: &[Flag]) -> BTreeSet<String> {
    let mut typed = BTreeSet::new();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let Some(flag) = word.strip_prefix("--").and_then(|name| flags.iter().find(|flag| flag.name == name))
        else {
            break;
        };
        if flag.arity != Arity::Switch {
            words.next();
        }
        typed.insert(flag.name.clone());
    }
    typed
}

/// `args` (normalized, from the command word on) with the settings of the config file `path`
/// put before the typed words, less those whose flag is typed: a typed flag wins over its key,
/// also for a repeatable flag, whose typed values replace the file's list.
pub fn with_config_file(args: &[String], path: &Path) -> Result<Vec<String>> {
    let Some((command, typed)) = args.split_first() else {
        bail!("no command to read {} for", path.display())
    };
    let flags = command_flags(command);
    let typed_now = typed_flags(typed, &flags);
    let mut words = vec![command.clone()];
    for setting in file_settings(command, &flags, path)? {
        if !typed_now.contains(&setting.flag) {
            words.extend(setting.words);
        }
    }
    words.extend(typed.iter().cloned());
    Ok(words)
}

/// `result`, an error in turning a command's flags into its settings, said to come with the
/// config file `file` when one was given (its values reached the settings as flags).
pub fn noting_file<T>(result: Result<T>, file: Option<&Path>) -> Result<T> {
    match file {
        Some(path) => result.with_context(|| format!("with config file {}", path.display())),
        None => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::argv::help_text;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| word.to_string()).collect()
    }

    /// A config file holding `text`, and the directory that keeps it.
    fn config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("orange.toml");
        std::fs::write(&path, text).expect("write the config file");
        (dir, path)
    }

    fn error(command: &str, text: &str) -> String {
        let (_dir, path) = config(text);
        let args = words(&[command, "--config", path.to_str().expect("a utf-8 temp path")]);
        format!("{:#}", with_config_file(&args, &path).expect_err("the file is refused"))
    }

    #[test]
    fn the_definition_gives_switches_options_and_repeatable_options() {
        let arity = |command: &str, name: &str| {
            command_flags(command).into_iter().find(|flag| flag.name == name).map(|flag| flag.arity)
        };
        assert_eq!(arity("agent", "server"), Some(Arity::Once));
        assert_eq!(arity("agent", "insecure"), Some(Arity::Switch));
        assert_eq!(arity("agent", "label"), Some(Arity::Repeated));
        assert_eq!(arity("server", "data"), Some(Arity::Once));
        assert_eq!(arity("agent", "help"), None);
    }

    #[test]
    fn every_flag_of_server_and_agent_is_a_key_and_config_is_one_of_them() {
        for command in ["server", "agent"] {
            let flags = command_flags(command);
            assert!(flags.len() > 10, "{command}: {flags:?}");
            let help = help_text(&[command.to_owned()]);
            let listed: BTreeSet<&str> = help
                .lines()
                .filter_map(|line| line.strip_prefix("  --"))
                .filter_map(|rest| rest.split([' ', ',']).next())
                .filter(|name| *name != "help")
                .collect();
            let keys: BTreeSet<&str> = flags.iter().map(|flag| flag.name.as_str()).collect();
            assert_eq!(keys, listed, "{command}: every option --help lists is a key, and no other");
            assert!(flags.iter().any(|flag| flag.name == CONFIG_FLAG), "{command}");
        }
    }

    #[test]
    fn value_kinds_come_from_the_flags_own_parser() {
        assert_eq!(value_kind("server", "poll-window"), ValueKind::Integer);
        assert_eq!(value_kind("server", "listen"), ValueKind::Text);
        assert_eq!(value_kind("agent", "max-tasks"), ValueKind::Integer);
        assert_eq!(value_kind("agent", "state"), ValueKind::Text);
    }

    #[test]
    fn a_file_becomes_words_before_the_typed_ones_and_typed_flags_win() -> Result<()> {
        let (_dir, path) = config(
            "poll_window = 7\nlisten = \"127.0.0.1:0\"\nmetrics_public = true\n\
             data = \"/srv/orange\"\n",
        );
        let args = words(&["server", "--config", "f", "--poll-window", "9"]);
        let merged = with_config_file(&args, &path)?;
        let expected = [
            "server",
            "--data",
            "/srv/orange",
            "--listen",
            "127.0.0.1:0",
            "--metrics-public",
            "--config",
            "f",
            "--poll-window",
            "9",
        ];
        assert_eq!(merged, words(&expected));
        Ok(())
    }

    #[test]
    fn repeatable_flags_take_lists_and_false_switches_are_left_out() -> Result<()> {
        let (_dir, path) =
            config("label = [\"role=web\", \"env=prod\"]\nallow_shell = false\ninsecure = true\n");
        let merged = with_config_file(&words(&["agent"]), &path)?;
        assert_eq!(merged, words(&["agent", "--insecure", "--label", "role=web", "--label", "env=prod"]));
        let typed = with_config_file(&words(&["agent", "--label", "a=b"]), &path)?;
        assert_eq!(typed, words(&["agent", "--insecure", "--label", "a=b"]));
        Ok(())
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_key_the_file_and_the_closest_key() {
        let text = error("server", "poll_windw = 20\n");
        assert!(text.contains("unknown key \"poll_windw\"; did you mean \"poll_window\"?"), "{text}");
        assert!(text.contains("orange.toml"), "{text}");
        let text = error("server", "poll-window = 20\n");
        assert!(text.contains("did you mean \"poll_window\"?"), "{text}");
        let text = error("agent", "zebra = 1\n");
        assert!(
            text.contains("unknown key \"zebra\"; the keys are") && text.contains("allow_shell"),
            "{text}"
        );
        let text = error("agent", "config = \"/etc/other.toml\"\n");
        assert!(text.contains("does not name another"), "{text}");
    }

    #[test]
    fn secret_values_are_refused_naming_the_file_key() {
        let text = error("server", "admin_token = \"s3cret\"\n");
        assert!(
            text.contains("key \"admin_token\" would hold a secret") && text.contains("admin_token_file")
        );
        assert!(!text.contains("s3cret"), "{text}");
        for (command, key) in [("server", "enroll_key"), ("agent", "enroll_key"), ("agent", "secret")] {
            let text = error(command, &format!("{key} = \"s3cret\"\n"));
            assert!(text.contains(&format!("name that file with {key}_file")), "{command}: {text}");
        }
    }

    #[test]
    fn wrong_types_and_refused_values_name_the_key() {
        let text = error("server", "poll_window = \"20\"\n");
        assert!(text.contains("key \"poll_window\" must be a whole number, not a string"), "{text}");
        let text = error("server", "metrics_public = \"yes\"\n");
        assert!(text.contains("key \"metrics_public\" must be true or false, not a string"), "{text}");
        let text = error("agent", "label = \"role=web\"\n");
        assert!(text.contains("key \"label\" must be a list, like label = [...], not a string"), "{text}");
        let text = error("agent", "max_tasks = -1\n");
        assert!(text.contains("key \"max_tasks\" \"-1\" is refused: invalid digit"), "{text}");
        let text = error("agent", "state = 3\n");
        assert!(text.contains("key \"state\" must be a string, not an integer"), "{text}");
    }

    #[test]
    fn duplicate_keys_bad_syntax_size_and_missing_files_are_refused_naming_the_file() {
        let text = error("server", "poll_window = 1\npoll_window = 2\n");
        assert!(text.contains("is not valid TOML") && text.contains("poll_window"), "{text}");
        let text = error("server", "poll_window = \n");
        assert!(text.contains("orange.toml is not valid TOML"), "{text}");
        let big = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES as usize));
        let text = error("server", &big);
        assert!(text.contains("is larger than 1024 KiB"), "{text}");
        let missing = Path::new("/nonexistent/orange.toml");
        let text = format!("{:#}", with_config_file(&words(&["server"]), missing).unwrap_err());
        assert!(text.starts_with("cannot read config file /nonexistent/orange.toml: "), "{text}");
    }
}
