//! `orange completions bash|zsh|fish`: each script is loaded by the real shell, and the bash and
//! fish ones are asked for completions (top level and nested) as a shell would at a TAB.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::support::{BIN, cli, tool};

/// `orange completions SHELL`, asserted to succeed, saved in `dir`; returns the file.
fn script(dir: &Path, shell: &str) -> PathBuf {
    let run = cli(&["completions", shell]);
    run.assert_success();
    assert!(!run.stdout.trim().is_empty(), "an empty {shell} script\n{run}");
    let path = dir.join(format!("orange.{shell}"));
    std::fs::write(&path, &run.stdout).expect("write the script");
    path
}

/// Runs `program args...`, returning its output.
fn shell(program: PathBuf, args: &[&str]) -> Output {
    Command::new(&program).args(args).output().unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What bash's `_orange` offers for the words `line` (the last one being completed).
fn bash_complete(script: &Path, line: &[&str]) -> Vec<String> {
    let words: Vec<String> = line.iter().map(|word| format!("'{word}'")).collect();
    let program = format!(
        "source '{}' && COMP_WORDS=({}) && COMP_CWORD={} && _orange && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words.join(" "),
        line.len() - 1
    );
    let out = shell(tool("bash", "bash"), &["-c", &program]);
    assert!(out.status.success(), "bash failed: {}", text(&out.stderr));
    text(&out.stdout).lines().filter(|line| !line.is_empty()).map(str::to_owned).collect()
}

#[test]
fn the_bash_script_loads_and_registers_its_function() {
    let program = format!("source <('{BIN}' completions bash) && complete -p orange");
    let out = shell(tool("bash", "bash"), &["-c", &program]);
    assert!(out.status.success(), "bash refused the script: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("-F _orange"), "{}", text(&out.stdout));
}

#[test]
fn bash_completes_subcommands_and_the_flags_of_the_nested_command_typed() {
    let dir = TempDir::new().expect("temp dir");
    let script = script(dir.path(), "bash");
    assert_eq!(bash_complete(&script, &["orange", "ta"]), ["task"]);
    assert!(bash_complete(&script, &["orange", "task", ""]).contains(&"run".to_owned()));
    assert_eq!(bash_complete(&script, &["orange", "task", "run", "--app"]), ["--appid"]);
    // `run` is a subcommand of both `task` and `job`: each gets its own flags.
    assert_eq!(bash_complete(&script, &["orange", "job", "run", "--max-c"]), ["--max-concurrency"]);
    assert!(bash_complete(&script, &["orange", "task", "run", "--max-c"]).is_empty());
    // An option's value and the command after `--` are not orange's words.
    assert!(bash_complete(&script, &["orange", "task", "run", "--appid", ""]).is_empty());
    assert!(bash_complete(&script, &["orange", "task", "run", "--", "ta"]).is_empty());
    assert!(bash_complete(&script, &["orange", "agent", "--pro"]).contains(&"--proxy".to_owned()));
}

#[test]
fn zsh_loads_the_script_and_registers_it_for_orange() {
    let dir = TempDir::new().expect("temp dir");
    let script = script(dir.path(), "zsh");
    let zsh = tool("zsh", "zsh");
    let syntax = shell(zsh.clone(), &["-n", &script.display().to_string()]);
    assert!(syntax.status.success(), "zsh -n refused the script: {}", text(&syntax.stderr));
    let program = format!(
        "autoload -Uz compinit && compinit -u -d '{}/zcompdump' && source '{}' && print -r -- $_comps[orange]",
        dir.path().display(),
        script.display()
    );
    let out = shell(zsh, &["-f", "-c", &program]);
    assert!(out.status.success(), "zsh failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "_orange");
}

#[test]
fn fish_completes_subcommands_and_nested_flags() {
    let dir = TempDir::new().expect("temp dir");
    let script = script(dir.path(), "fish");
    let fish = tool("fish", "fish");
    let syntax = shell(fish.clone(), &["-n", &script.display().to_string()]);
    assert!(syntax.status.success(), "fish -n refused the script: {}", text(&syntax.stderr));
    let complete = |line: &str| {
        let program = format!("source '{}'; complete -C '{line}'", script.display());
        let out = shell(fish.clone(), &["--no-config", "-c", &program]);
        assert!(out.status.success(), "fish failed: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|line| line.split('\t').next().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert!(complete("orange ta").contains(&"task".to_owned()));
    assert!(complete("orange job run --max-c").contains(&"--max-concurrency".to_owned()));
    assert!(!complete("orange task run --max-c").contains(&"--max-concurrency".to_owned()));
}

#[test]
fn an_unknown_shell_is_a_usage_error_naming_the_three() {
    let run = cli(&["completions", "tcsh"]);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    for shell in ["bash", "zsh", "fish", "tcsh"] {
        assert!(run.stderr.contains(shell), "{shell} not named\n{run}");
    }
}
