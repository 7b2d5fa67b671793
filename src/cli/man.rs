//! `orange man`: the manual page orange(1), in roff, made at run time from the help text argh
//! prints for every command (usage, description, positionals, options, subcommands, examples,
//! notes, exit codes), so the page cannot drift from `--help`.

use argh::{ArgsInfo, CommandInfoWithArgs, FromArgs};
use roff::{Roff, bold, roman};

use super::argv::{command_tree, help_text};

/// Print the manual page orange(1) (roff) on stdout.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "man",
    example = "orange man > /usr/local/share/man/man1/orange.1",
    example = "orange man | man -l -",
    note = "The page holds the --help text of every command, made from the same definitions."
)]
pub struct ManArgs {}

/// Prints the page on stdout.
pub fn run() -> anyhow::Result<i32> {
    print!("{}", page());
    Ok(0)
}

/// Column where argh starts the description of an option, a positional or a subcommand.
const DESCRIPTION_COLUMN: usize = 20;

/// The whole page: the top command's help as NAME, SYNOPSIS, DESCRIPTION and OPTIONS, every
/// command's help under COMMANDS, then the top examples, notes and exit status.
pub fn page() -> String {
    let top = Help::parse(&help_text(&[]));
    let mut roff = Roff::new();
    let version = format!("orange {}", env!("CARGO_PKG_VERSION"));
    roff.control("TH", ["ORANGE", "1", "", version.as_str(), "User Commands"]);
    // Flags and URLs read better unbroken and unstretched.
    roff.control("nh", []);
    roff.control("ad", ["l"]);
    roff.control("SH", ["NAME"]);
    let summary = top.description.trim_start_matches("orange:").trim();
    roff.text([roman(format!("orange - {summary}"))]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold("orange"), roman(top.usage.trim_start_matches("orange").to_owned())]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(summary)]);
    roff.control("SH", ["OPTIONS"]);
    entries(&mut roff, top.section("Options:"));
    roff.control("SH", ["COMMANDS"]);
    for path in command_paths() {
        command(&mut roff, &path);
    }
    trailer(&mut roff, &top);
    roff.render()
}

/// The top command's examples, notes and exit codes, and where to read more.
fn trailer(roff: &mut Roff, top: &Help) {
    roff.control("SH", ["EXAMPLES"]);
    examples(roff, top.section("Examples:"));
    roff.control("SH", ["NOTES"]);
    paragraphs(roff, top.section("Notes:"));
    roff.control("SH", ["EXIT STATUS"]);
    entries(roff, top.section("Error codes:"));
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("orange COMMAND --help prints the same text for one command.")]);
}

/// Every command path below the top, depth first in the order `--help` lists them.
pub fn command_paths() -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    add_paths(command_tree(), &[], &mut paths);
    paths
}

/// Adds to `paths` each subcommand of `command` (whose path is `path`), each followed by its own.
fn add_paths(command: &CommandInfoWithArgs, path: &[String], paths: &mut Vec<Vec<String>>) {
    for sub in &command.commands {
        let sub_path: Vec<String> = path.iter().cloned().chain([sub.name.to_owned()]).collect();
        paths.push(sub_path.clone());
        add_paths(&sub.command, &sub_path, paths);
    }
}

/// One command's subsection: its usage, description and each section of its help.
fn command(roff: &mut Roff, path: &[String]) {
    let help = Help::parse(&help_text(path));
    let name = format!("orange {}", path.join(" "));
    roff.control("SS", [name.as_str()]);
    roff.text([bold("Usage: "), roman(help.usage.clone())]);
    roff.control("PP", []);
    roff.text([roman(help.description.clone())]);
    for (title, lines) in &help.sections {
        roff.control("PP", []);
        roff.text([bold(title.trim_end_matches(':'))]);
        match title.as_str() {
            "Examples:" => examples(roff, lines),
            "Notes:" => paragraphs(roff, lines),
            _ => entries(roff, lines),
        }
    }
}

/// A list of `term  description` lines as tagged paragraphs.
fn entries(roff: &mut Roff, lines: &[String]) {
    for (term, description) in split_entries(lines) {
        roff.control("TP", []);
        roff.text([bold(term)]);
        roff.text([roman(description)]);
    }
}

/// Example command lines, shown as they are, indented.
fn examples(roff: &mut Roff, lines: &[String]) {
    roff.control("RS", []);
    roff.control("nf", []);
    for line in lines {
        roff.text([roman(line.trim().to_owned())]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
}

/// Lines of prose, each its own paragraph.
fn paragraphs(roff: &mut Roff, lines: &[String]) {
    for line in lines {
        roff.control("PP", []);
        roff.text([roman(line.trim().to_owned())]);
    }
}

/// The (term, description) pairs of a section's lines: a term starts at column 2 and its
/// description at [`DESCRIPTION_COLUMN`] (on the next lines when the term is longer); an exit
/// code is the number leading its line, however long; wrapped lines continue the description
/// before them.
fn split_entries(lines: &[String]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for line in lines {
        let is_term = line.starts_with("  ") && !line[2..].starts_with(' ');
        if !is_term {
            if let Some((_, description)) = pairs.last_mut() {
                push_words(description, line.trim());
            }
            continue;
        }
        let (term, description) = match (exit_code(line.trim()), line.get(2..DESCRIPTION_COLUMN)) {
            (Some(pair), _) => pair,
            (None, Some(column)) if line[DESCRIPTION_COLUMN..].starts_with(|c: char| c != ' ') => {
                (column.trim(), &line[DESCRIPTION_COLUMN..])
            }
            (None, _) => (line.trim(), ""),
        };
        pairs.push((term.to_owned(), description.trim().to_owned()));
    }
    pairs
}

/// `124 the task ran past ...` as its code and text; `None` for a line not led by a number.
fn exit_code(line: &str) -> Option<(&str, &str)> {
    let (code, text) = line.split_once(' ')?;
    let number = code.strip_prefix('-').unwrap_or(code);
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then_some((code, text))
}

/// Appends `words` to `text` with a space between.
fn push_words(text: &mut String, words: &str) {
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(words);
}

/// The section headings argh writes, in its order.
const SECTIONS: &[&str] =
    &["Positional Arguments:", "Options:", "Commands:", "Examples:", "Notes:", "Error codes:"];

/// One command's help text in parts.
struct Help {
    /// The usage line without `Usage: `.
    usage: String,
    /// The paragraph after the usage line.
    description: String,
    /// Each titled section (`Options:`, `Examples:`, ...) with its lines, in order.
    sections: Vec<(String, Vec<String>)>,
}

impl Help {
    /// Splits argh's help text: a `Usage:` line, a description, then sections each headed by one
    /// of [`SECTIONS`].
    fn parse(text: &str) -> Help {
        let mut lines = text.lines();
        let usage = lines.next().unwrap_or_default().trim_start_matches("Usage:").trim().to_owned();
        let mut description = String::new();
        let mut sections: Vec<(String, Vec<String>)> = Vec::new();
        for line in lines {
            if SECTIONS.contains(&line) {
                sections.push((line.to_owned(), Vec::new()));
            } else if let Some((_, body)) = sections.last_mut() {
                if !line.trim().is_empty() {
                    body.push(line.to_owned());
                }
            } else if !line.trim().is_empty() {
                push_words(&mut description, line.trim());
            }
        }
        Help { usage, description, sections }
    }

    /// The lines of the section titled `title` (empty if it has none).
    fn section(&self, title: &str) -> &[String] {
        self.sections.iter().find(|(name, _)| name == title).map(|(_, lines)| lines.as_slice()).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_terms_and_join_wrapped_descriptions() {
        let lines: Vec<String> = [
            "  --appid           app ids to run on",
            "  --max-concurrency most hosts at once:",
            "                    N or P%",
            "  -n, --no-stdin    send no stdin",
            "  124 the task ran past its timeout",
        ]
        .iter()
        .map(|line| line.to_string())
        .collect();
        let pairs = split_entries(&lines);
        let terms: Vec<&str> = pairs.iter().map(|(term, _)| term.as_str()).collect();
        assert_eq!(terms, ["--appid", "--max-concurrency", "-n, --no-stdin", "124"]);
        assert_eq!(pairs[1].1, "most hosts at once: N or P%");
        assert_eq!(pairs[3].1, "the task ran past its timeout");
    }

    #[test]
    fn every_command_path_is_walked_nested_ones_too() {
        let paths: Vec<String> = command_paths().iter().map(|path| path.join(" ")).collect();
        for expected in ["server", "server backup", "task run", "job run", "completions", "man"] {
            assert!(paths.iter().any(|path| path == expected), "{expected} missing from {paths:?}");
        }
    }

    #[test]
    fn the_page_opens_with_its_title_and_escapes_dashes() {
        let page = page();
        assert!(page.contains(".TH ORANGE 1"), "{page}");
        assert!(page.contains(".SS \"orange task run\""));
        assert!(page.contains("\\-\\-max\\-concurrency"));
    }
}
