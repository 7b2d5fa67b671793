//! `orange completions bash|zsh|fish`: a shell completion script for every subcommand and its
//! flags, made from the same argh definitions that parse the command line, so it cannot drift.
//!
//! zsh and fish scripts come from `argh_complete`. Its bash script finds the current subcommand
//! by matching each word against every subcommand name at any depth, which picks the wrong one
//! when two commands share a name (`task run` and `job run`, five `list`s); the bash script is
//! therefore written here, walking the command tree one level per word.

use std::fmt::Write;
use std::str::FromStr;

use argh::{ArgsInfo, CommandInfoWithArgs, FlagInfoKind, FromArgs};
use argh_complete::Generator;

use super::argv::command_tree;

/// Print a shell completion script for orange on stdout.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "completions",
    example = "orange completions bash > /etc/bash_completion.d/orange",
    example = "orange completions zsh > ~/.zfunc/_orange",
    example = "orange completions fish > ~/.config/fish/completions/orange.fish",
    note = "The script completes subcommands and their flags at every depth (`orange task run --<TAB>`)."
)]
pub struct CompletionsArgs {
    /// the shell: bash, zsh or fish
    #[argh(positional)]
    pub shell: Shell,
}

/// A shell orange writes completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// GNU bash (bash-completion's `complete -F`).
    Bash,
    /// zsh (`compdef`).
    Zsh,
    /// fish (`complete -c`).
    Fish,
}

impl FromStr for Shell {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "bash" => Ok(Shell::Bash),
            "zsh" => Ok(Shell::Zsh),
            "fish" => Ok(Shell::Fish),
            other => Err(format!("unknown shell {other:?}: choose bash, zsh or fish")),
        }
    }
}

/// Name of the program completed.
const PROGRAM: &str = "orange";

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let tree = command_tree();
    match shell {
        Shell::Bash => bash_script(tree),
        Shell::Zsh => argh_complete::zsh::Zsh::generate(PROGRAM, tree),
        Shell::Fish => fish_script(tree),
    }
}

/// Prints the script for `args.shell` on stdout.
pub fn run(args: CompletionsArgs) -> anyhow::Result<i32> {
    print!("{}", script(args.shell));
    Ok(0)
}

/// argh_complete's fish script, reading the command line with `commandline -opc` (fish 3.0
/// and later) rather than `-xpc`, which fish before 3.7 (Debian 12 has 3.6) refuses, failing
/// every completion.
fn fish_script(tree: &CommandInfoWithArgs) -> String {
    argh_complete::fish::Fish::generate(PROGRAM, tree).replace("commandline -xpc", "commandline -opc")
}

/// A bash function `_orange` registered with `complete -F`: it walks the words before the cursor
/// down the command tree (skipping the value after an option that takes one, stopping at `--`),
/// then offers the flags and subcommands of the command reached. After `--`, or where a command
/// takes a positional, it falls back to bash's file names (`-o default`).
fn bash_script(tree: &CommandInfoWithArgs) -> String {
    let mut walk = String::new();
    let mut offer = String::new();
    add_bash_command(tree, PROGRAM, &mut walk, &mut offer);
    format!(
        r#"# bash completion for {PROGRAM}; load with: source <({PROGRAM} completions bash)
_{PROGRAM}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="{PROGRAM}" takes_value="" i word
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [[ -n "$takes_value" ]]; then
            takes_value=""
            continue
        fi
        [[ "$word" == "--" ]] && return 0
        case "$cmd $word" in
{walk}        esac
    done
    [[ -n "$takes_value" ]] && return 0
    case "$cmd" in
{offer}    esac
    return 0
}}
complete -F _{PROGRAM} -o bashdefault -o default {PROGRAM}
"#
    )
}

/// The `case` arms of `cmd` (whose path is `path`, words joined by `_`) and of its subcommands:
/// in `walk`, a word naming a subcommand moves down and an option taking a value marks the next
/// word as its value; in `offer`, the words offered at `cmd`.
fn add_bash_command(cmd: &CommandInfoWithArgs, path: &str, walk: &mut String, offer: &mut String) {
    let mut words = Vec::new();
    for flag in cmd.flags.iter().filter(|flag| !flag.hidden) {
        let names: Vec<String> = flag_names(flag);
        if matches!(flag.kind, FlagInfoKind::Option { .. }) {
            let patterns: Vec<String> = names.iter().map(|name| format!("\"{path} {name}\"")).collect();
            // Writing to a String cannot fail.
            writeln!(walk, "            {}) takes_value=1 ;;", patterns.join(" | "))
                .expect("write to String");
        }
        words.extend(names);
    }
    for sub in &cmd.commands {
        let sub_path = format!("{path}_{}", sub.name);
        // Writing to a String cannot fail.
        writeln!(walk, "            \"{path} {}\") cmd=\"{sub_path}\" ;;", sub.name)
            .expect("write to String");
        words.push(sub.name.to_owned());
    }
    // Writing to a String cannot fail.
    writeln!(offer, "        {path}) COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")) ;;", words.join(" "))
        .expect("write to String");
    for sub in &cmd.commands {
        add_bash_command(&sub.command, &format!("{path}_{}", sub.name), walk, offer);
    }
}

/// The long name and, if any, the short name of `flag`, as typed.
fn flag_names(flag: &argh::FlagInfo) -> Vec<String> {
    let mut names = vec![flag.long.to_owned()];
    names.extend(flag.short.map(|short| format!("-{short}")));
    names.retain(|name| !name.is_empty());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_shell_names_the_three_known_ones() {
        let refused = "tcsh".parse::<Shell>().unwrap_err();
        assert!(refused.contains("tcsh") && refused.contains("bash, zsh or fish"), "{refused}");
        assert_eq!("fish".parse::<Shell>(), Ok(Shell::Fish));
    }

    #[test]
    fn the_bash_script_tells_task_run_from_job_run() {
        let script = script(Shell::Bash);
        assert!(script.contains("\"orange_task run\") cmd=\"orange_task_run\""), "{script}");
        assert!(script.contains("\"orange_job run\") cmd=\"orange_job_run\""), "{script}");
        assert!(script.contains("\"orange_task_run --appid\") takes_value=1"), "{script}");
    }

    #[test]
    fn zsh_and_fish_scripts_name_nested_subcommands() {
        assert!(script(Shell::Zsh).contains("_orange_task_run()"));
        let fish = script(Shell::Fish);
        assert!(fish.contains("__fish_orange_using_command task run"));
        assert!(fish.contains("commandline -opc") && !fish.contains("-xpc"));
    }
}
