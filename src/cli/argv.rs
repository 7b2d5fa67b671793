//! The command line before and around argh: what every `orange` command accepts beyond argh's
//! own syntax (`-h`, `-V`/`--version` anywhere, `--flag=value`), a "did you mean" for a
//! mistyped subcommand or option, the settings of a `--config FILE`, and the exit codes the
//! parse ends with: 0 for help and the version, [`EXIT_USAGE`] for a usage error. It also holds
//! the command tree argh derives, which the config file, the manual page and the completions
//! read the flags and subcommands from.

use std::sync::OnceLock;

use argh::{ArgsInfo, CommandInfoWithArgs, FromArgs};

use super::Orange;

/// Exit status of a usage error (an unknown command or option, a missing value), as getopt
/// tools and ssh use.
pub const EXIT_USAGE: i32 = 2;
/// Exit status of orange's own failures in the operator commands.
pub const EXIT_FAILED: i32 = 1;

/// A flag value orange's own checks refused (a zero timeout, a bad label, no target): a usage
/// error like argh's, so the command exits with [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Returns early with a [`Usage`] error made of a format string.
macro_rules! usage_bail {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::cli::argv::Usage(format!($($arg)*))))
    };
}
pub(crate) use usage_bail;

/// `message` as a [`Usage`] error.
pub fn usage(message: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(Usage(message.to_string()))
}

/// What the command line asks for.
pub enum Parsed {
    /// A command to run.
    Run(Box<Orange>),
    /// Nothing to run: print `text` (to stdout when `code` is 0, else to stderr) and exit with
    /// `code`.
    Exit {
        /// What to print.
        text: String,
        /// The exit status.
        code: i32,
    },
}

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Parsed {
    let args = normalize(args);
    if asks_version(&args) {
        return Parsed::Exit { text: format!("orange {}\n", env!("CARGO_PKG_VERSION")), code: 0 };
    }
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match Orange::from_args(&["orange"], &words) {
        Ok(orange) => match orange.config_file() {
            None => Parsed::Run(Box::new(orange)),
            Some(path) => with_config_file(&args, path),
        },
        Err(exit) if exit.status.is_ok() => Parsed::Exit { text: exit.output, code: 0 },
        Err(exit) => {
            let path = command_path(&args, "");
            let mut text = with_suggestion(exit.output, &args);
            let command = ["orange".to_owned()].into_iter().chain(path).collect::<Vec<_>>().join(" ");
            text.push_str(&format!("\nRun `{command} --help` for more information.\n"));
            Parsed::Exit { text, code: EXIT_USAGE }
        }
    }
}

/// `args` parsed again with the settings of the config file `path` before the typed words; a
/// bad file is a usage error naming it.
fn with_config_file(args: &[String], path: &std::path::Path) -> Parsed {
    let merged = match super::config_file::with_config_file(args, path) {
        Ok(merged) => merged,
        Err(e) => return Parsed::Exit { text: format!("orange: {e:#}\n"), code: EXIT_USAGE },
    };
    let words: Vec<&str> = merged.iter().map(String::as_str).collect();
    match Orange::from_args(&["orange"], &words) {
        Ok(orange) => Parsed::Run(Box::new(orange)),
        Err(exit) => Parsed::Exit {
            text: format!("orange: with config file {}: {}", path.display(), exit.output),
            code: EXIT_USAGE,
        },
    }
}

/// `args` with `-h` as `--help` and `--name=value` as `--name value`, up to a `--` (the words
/// after it are a command's, left as they are).
pub fn normalize(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut rest = args.iter();
    for arg in rest.by_ref() {
        if arg == "--" {
            out.push(arg.clone());
            break;
        }
        match arg.as_str() {
            "-h" => out.push("--help".to_owned()),
            long if long.starts_with("--") => match long.split_once('=') {
                Some((name, value)) if name.len() > 2 => {
                    out.push(name.to_owned());
                    out.push(value.to_owned());
                }
                _ => out.push(arg.clone()),
            },
            _ => out.push(arg.clone()),
        }
    }
    out.extend(rest.cloned());
    out
}

/// True when `-V` or `--version` comes before any `--`.
fn asks_version(args: &[String]) -> bool {
    args.iter().take_while(|arg| *arg != "--").any(|arg| arg == "-V" || arg == "--version")
}

/// argh's message, with "Did you mean ...?" when it names an unrecognized word close to a
/// subcommand or option of the command it was given to.
fn with_suggestion(message: String, args: &[String]) -> String {
    let Some(word) = message.strip_prefix("Unrecognized argument: ").and_then(|rest| rest.lines().next())
    else {
        return message;
    };
    let word = word.trim().to_owned();
    let path = command_path(args, &word);
    let candidates = if word.starts_with('-') { options(&path) } else { subcommands(&path) };
    match closest(&word, &candidates) {
        Some(best) => {
            let (first, rest) = message.split_once('\n').unwrap_or((&message, ""));
            format!("{first}\nDid you mean `{best}`?\n{rest}")
        }
        None => message,
    }
}

/// The subcommand words that lead to where `word` was found: each word before it that names a
/// subcommand of the path so far.
fn command_path(args: &[String], word: &str) -> Vec<String> {
    let mut path = Vec::new();
    for arg in args.iter().take_while(|arg| *arg != word && *arg != "--") {
        if subcommands(&path).iter().any(|name| name == arg) {
            path.push(arg.clone());
        }
    }
    path
}

/// argh's help text of the command at `path`.
pub(crate) fn help_text(path: &[String]) -> String {
    let mut words: Vec<&str> = path.iter().map(String::as_str).collect();
    words.push("--help");
    match Orange::from_args(&["orange"], &words) {
        Err(exit) => exit.output,
        Ok(_) => String::new(),
    }
}

/// The whole command tree as argh derives it: every command's flags and subcommands, in the
/// order `--help` lists them.
pub(crate) fn command_tree() -> &'static CommandInfoWithArgs {
    static TREE: OnceLock<CommandInfoWithArgs> = OnceLock::new();
    TREE.get_or_init(Orange::get_args_info)
}

/// The command at `path` (`orange` itself for none); `None` when a word names no subcommand.
pub(crate) fn command_at(path: &[String]) -> Option<&'static CommandInfoWithArgs> {
    path.iter().try_fold(command_tree(), |command, word| {
        command.commands.iter().find(|sub| sub.name == word).map(|sub| &sub.command)
    })
}

/// The subcommand names of the command at `path`.
fn subcommands(path: &[String]) -> Vec<String> {
    command_at(path)
        .map_or_else(Vec::new, |command| command.commands.iter().map(|sub| sub.name.to_owned()).collect())
}

/// The long option names (`--help` too) of the command at `path`, as its help lists them.
fn options(path: &[String]) -> Vec<String> {
    command_at(path).map_or_else(Vec::new, |command| {
        command.flags.iter().filter(|flag| !flag.hidden).map(|flag| flag.long.to_owned()).collect()
    })
}

/// The candidate closest to `word`, if it is close: at most 2 edits, and fewer than the word's
/// length.
pub(crate) fn closest(word: &str, candidates: &[impl AsRef<str>]) -> Option<String> {
    candidates
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(word, candidate.as_ref()), candidate.as_ref()))
        .filter(|&(distance, _)| distance <= 2 && distance < word.trim_start_matches('-').len())
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| word.to_string()).collect()
    }

    fn exit(args: &[&str]) -> (String, i32) {
        match parse(&words(args)) {
            Parsed::Exit { text, code } => (text, code),
            Parsed::Run(_) => panic!("{args:?} parsed as a command"),
        }
    }

    #[test]
    fn equals_values_split_and_h_is_help_but_not_after_the_separator() {
        let normal =
            normalize(&words(&["task", "run", "--appid=web-1", "-h", "--", "ls", "--color=auto", "-h"]));
        assert_eq!(
            normal,
            words(&["task", "run", "--appid", "web-1", "--help", "--", "ls", "--color=auto", "-h"])
        );
        assert_eq!(normalize(&words(&["--=x", "--env=A=b"])), words(&["--=x", "--env", "A=b"]));
    }

    #[test]
    fn help_and_version_exit_0_anywhere_and_usage_errors_exit_2() {
        let (text, code) = exit(&["task", "list", "-h"]);
        assert_eq!(code, 0);
        assert!(text.starts_with("Usage: orange task list"), "{text}");
        for version in [&["-V"][..], &["--version"], &["job", "run", "-V"]] {
            assert_eq!(exit(version), (format!("orange {}\n", env!("CARGO_PKG_VERSION")), 0));
        }
        let (text, code) = exit(&["task", "list", "--limit"]);
        assert_eq!(code, EXIT_USAGE, "{text}");
    }

    #[test]
    fn a_near_miss_gets_a_suggestion_and_a_far_one_none() {
        let (text, code) = exit(&["tsak", "list"]);
        assert_eq!(code, EXIT_USAGE);
        assert!(text.contains("Did you mean `task`?"), "{text}");
        let (text, _) = exit(&["job", "rnu", "--all"]);
        assert!(text.contains("Did you mean `run`?"), "{text}");
        let (text, _) = exit(&["task", "list", "--limt", "3"]);
        assert!(text.contains("Did you mean `--limit`?"), "{text}");
        let (text, _) = exit(&["zebra"]);
        assert!(!text.contains("Did you mean"), "{text}");
    }

    #[test]
    fn an_equals_value_reaches_the_command() {
        let Parsed::Run(orange) = parse(&words(&["task", "list", "--limit=7"])) else { panic!("not parsed") };
        let Some(super::super::Command::Task(task)) = orange.command else { panic!("not a task command") };
        let super::super::task::TaskCommand::List(list) = task.command else { panic!("not task list") };
        assert_eq!(list.limit, Some(7));
    }
}
