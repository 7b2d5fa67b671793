//! `orange man`: the page renders with the real `man`, and holds every command `--help` lists
//! (walked from `orange --help` down), so a new subcommand cannot be left out of it.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::support::{cli, tool};

/// The subcommands a help text lists under "Commands:".
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line[2..].starts_with(' '))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every command path, from `orange --help` down through each command's own `--help`.
fn every_command() -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(path) = pending.pop() {
        assert!(found.len() < 200, "the command tree does not end: {found:?}");
        let mut args: Vec<&str> = path.split_whitespace().collect();
        args.push("--help");
        let run = cli(&args);
        run.assert_success();
        for name in listed_commands(&run.stdout) {
            let child = format!("{path} {name}").trim().to_owned();
            found.push(child.clone());
            pending.push(child);
        }
    }
    found
}

/// The commands whose heading, a line `orange PATH`, is not in the rendered `page`.
fn missing_from(page: &str, commands: &[String]) -> Vec<String> {
    let headings: Vec<&str> =
        page.lines().map(str::trim).filter(|line| line.starts_with("orange ")).collect();
    commands.iter().filter(|path| !headings.contains(&format!("orange {path}").as_str())).cloned().collect()
}

/// `MANWIDTH=80 man -l FILE`, asserted to succeed; the rendered text.
fn render(file: &Path) -> String {
    let out = Command::new(tool("man", "man-db"))
        .arg("-l")
        .arg(file)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .expect("run man");
    assert!(out.status.success(), "man -l failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_manual_page_renders_and_holds_every_command_and_their_flags() {
    let run = cli(&["man"]);
    run.assert_success();
    assert!(run.stdout.starts_with(".") || run.stdout.starts_with("'"), "not roff\n{run}");
    let dir = TempDir::new().expect("temp dir");
    let file = dir.path().join("orange.1");
    std::fs::write(&file, &run.stdout).expect("write the page");
    let page = render(&file);

    let commands = every_command();
    for expected in ["server", "agent", "task run", "job run", "server backup", "completions", "man"] {
        assert!(
            commands.iter().any(|path| path == expected),
            "{expected} not found by the walk: {commands:?}"
        );
    }
    assert_eq!(
        missing_from(&page, &commands),
        Vec::<String>::new(),
        "commands missing from the page:\n{page}"
    );
    for flag in ["--appid", "--max-concurrency", "--allow-shell", "--proxy", "--tls-cert", "--no-stdin"] {
        assert!(page.contains(flag), "{flag} missing from the page:\n{page}");
    }
    for heading in ["NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS"] {
        assert!(page.lines().any(|line| line == heading), "no {heading} section:\n{page}");
    }
    assert!(page.contains("orange task run --appid web-1 -- df -h /"), "examples missing:\n{page}");
    assert!(page.contains("the task ran past its timeout on the host"), "exit codes mangled:\n{page}");
}

#[test]
fn the_completeness_check_notices_a_command_left_out() {
    let commands = vec!["task run".to_owned(), "cp".to_owned()];
    let page = "COMMANDS\n   orange task run\n       Usage: ...\n";
    assert_eq!(missing_from(page, &commands), ["cp"]);
}
