//! The layers of the crate point one way: `protocol` ← `client` ← `agent` / `server` ← `cli` ←
//! `main`. This test reads every file under `src/`, finds each path that names a top-level
//! module (`crate::x`, `use crate::{x, y}`, `$crate::x`, and `super::` chains that climb out of
//! the file's top-level module) and fails, naming the file, the line and the rule, when a lower
//! layer names a higher one or `agent` and `server` name each other. It also fails when
//! `protocol` names a runtime (tokio, axum, ureq), the agent or the client an async one, or a
//! file outside `server/store/` names sled (outside `server/codec.rs`, bincode).

use std::path::{Path, PathBuf};

/// The rank of a top-level module: a module may only name modules of a lower rank (or itself).
fn rank(module: &str) -> Option<u8> {
    match module {
        "protocol" => Some(0),
        "client" => Some(1),
        "agent" | "server" => Some(2),
        "cli" => Some(3),
        "main" | "lib" => Some(4),
        _ => None,
    }
}

/// One reference from a file to a top-level module.
#[derive(Debug, Clone, PartialEq)]
struct Reference {
    line: usize,
    target: String,
}

/// A reference that breaks the rule, with the file it is in.
#[derive(Debug)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    target: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}` names `crate::{}`; the layers are protocol <- client <- agent / server <- cli <- \
             main, and agent and server never name each other",
            self.file, self.line, self.from, self.target
        )
    }
}

/// Replaces comments, string literals and character literals with spaces, keeping line breaks, so
/// that only code is scanned.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && is_raw_string(&chars, i) {
            i = skip_raw_string(&chars, i, &mut out);
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: blank up to its closing quote.
            out.push_str("  ");
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// True when `r` at `i` opens a raw string (`r"`, `r#"`), not an identifier ending in r.
fn is_raw_string(chars: &[char], i: usize) -> bool {
    let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    starts_word && chars.get(j) == Some(&'"')
}

/// Blanks a raw string starting at `i`; returns the index after it.
fn skip_raw_string(chars: &[char], mut i: usize, out: &mut String) -> usize {
    i += 1;
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    out.push_str(&" ".repeat(hashes + 2));
    i += 1;
    while i < chars.len() {
        let closes = chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#'));
        if closes {
            out.push_str(&" ".repeat(hashes + 1));
            return i + hashes + 1;
        }
        out.push(if chars[i] == '\n' { '\n' } else { ' ' });
        i += 1;
    }
    i
}

/// A token of code: an identifier, `::`, or one punctuation character, with its line.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token { text: chars[start..i].iter().collect(), line });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token { text: "::".into(), line });
            i += 2;
        } else {
            out.push(Token { text: c.to_string(), line });
            i += 1;
        }
    }
    out
}

/// Every top-level module named from a file whose module path (from the crate root, e.g.
/// `["agent", "config"]`) is `module_path`.
fn references(module_path: &[String], text: &str) -> Vec<Reference> {
    let toks = tokens(&code_only(text));
    let mut found = Vec::new();
    // Inline `mod name { .. }` blocks deepen the module path for `super::`; each entry is the
    // brace depth at which one was opened.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut pending_mod = false;
    for (i, tok) in toks.iter().enumerate() {
        match tok.text.as_str() {
            "{" => {
                depth += 1;
                if pending_mod {
                    inline_mods.push(depth);
                }
                pending_mod = false;
            }
            "}" => {
                if inline_mods.last() == Some(&depth) {
                    inline_mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            ";" => pending_mod = false,
            "mod" => pending_mod = true,
            "crate" if toks.get(i + 1).is_some_and(|t| t.text == "::") => {
                found.extend(named_after(&toks, i + 2));
            }
            "super" if i == 0 || toks[i - 1].text != "::" => {
                let mut supers = 1;
                let mut j = i + 1;
                while toks.get(j).is_some_and(|t| t.text == "::")
                    && toks.get(j + 1).is_some_and(|t| t.text == "super")
                {
                    supers += 1;
                    j += 2;
                }
                let module_depth = module_path.len() + inline_mods.len();
                if supers >= module_depth && toks.get(j).is_some_and(|t| t.text == "::") {
                    found.extend(named_after(&toks, j + 1));
                }
            }
            _ => {}
        }
    }
    found
}

/// The first segments of the path (or of each path in a `{..}` group) starting at token `at`.
fn named_after(toks: &[Token], at: usize) -> Vec<Reference> {
    let Some(first) = toks.get(at) else { return vec![] };
    if first.text != "{" {
        return vec![Reference { line: first.line, target: first.text.clone() }];
    }
    let mut found = Vec::new();
    let mut depth = 0;
    let mut expect_segment = true;
    for tok in &toks[at..] {
        match tok.text.as_str() {
            "{" => {
                depth += 1;
                expect_segment = depth == 1;
            }
            "}" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," => expect_segment = depth == 1,
            text if expect_segment => {
                found.push(Reference { line: tok.line, target: text.to_owned() });
                expect_segment = false;
            }
            _ => {}
        }
    }
    found
}

/// The module path of a file under `src/`: `agent/config.rs` → `["agent", "config"]`,
/// `agent/mod.rs` → `["agent"]`, `client.rs` → `["client"]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> =
        relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_owned();
    }
    if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The references in one file that break the rule.
fn violations(file: &str, module_path: &[String], text: &str) -> (usize, Vec<Violation>) {
    let from = module_path.first().cloned().unwrap_or_default();
    let from_rank = rank(&from).unwrap_or_else(|| panic!("{file}: unknown top-level module {from:?}"));
    let refs = references(module_path, text);
    let bad = refs
        .iter()
        .filter(|r| r.target != from)
        .filter(|r| rank(&r.target).is_none_or(|to| to >= from_rank))
        .map(|r| Violation {
            file: file.to_owned(),
            line: r.line,
            from: from.clone(),
            target: r.target.clone(),
        })
        .collect();
    (refs.len(), bad)
}

/// The outside crates a file may not name, by where it is: `protocol` no runtime, the agent and
/// the client no async runtime; only `server/store/` knows sled and only `server/codec.rs`
/// bincode.
fn forbidden_crates(module_path: &[String]) -> Vec<&'static str> {
    let mut forbidden = Vec::new();
    let top = module_path.first().map(String::as_str).unwrap_or_default();
    if top == "protocol" {
        forbidden.extend(["tokio", "axum", "axum_server", "hyper", "hyper_util", "ureq"]);
    }
    if top == "agent" || top == "client" {
        forbidden.extend(["tokio", "axum", "axum_server", "hyper", "hyper_util"]);
    }
    let second = module_path.get(1).map(String::as_str);
    if !(top == "server" && second == Some("store")) {
        forbidden.push("sled");
    }
    if !(top == "server" && second == Some("codec")) {
        forbidden.push("bincode");
    }
    forbidden
}

/// Lines where a file names a crate it may not (a path starting with that crate's name).
fn crate_violations(file: &str, module_path: &[String], text: &str) -> Vec<String> {
    let forbidden = forbidden_crates(module_path);
    let toks = tokens(&code_only(text));
    let mut bad = Vec::new();
    for (i, tok) in toks.iter().enumerate() {
        let starts_path = i == 0 || toks[i - 1].text != "::";
        let is_path = toks.get(i + 1).is_some_and(|t| t.text == "::");
        if starts_path && is_path && forbidden.contains(&tok.text.as_str()) {
            bad.push(format!(
                "{file}:{}: names the crate `{}`, which {file} may not use",
                tok.line, tok.text
            ));
        }
    }
    bad
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module(path: &str) -> Vec<String> {
    module_path(Path::new(path))
}

#[test]
fn no_layer_names_a_higher_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let (mut checked, mut seen, mut bad, mut crate_bad) = (0, 0, Vec::new(), Vec::new());
    for path in &files {
        let relative = path.strip_prefix(&src).expect("a file under src/");
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let file = relative.display().to_string();
        let (count, found) = violations(&file, &module_path(relative), &text);
        checked += 1;
        seen += count;
        bad.extend(found);
        crate_bad.extend(crate_violations(&file, &module_path(relative), &text));
    }
    assert!(checked >= 50, "only {checked} files found under {}", src.display());
    assert!(seen >= 200, "only {seen} references to top-level modules found; the scan is broken");
    let report: Vec<String> = bad.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "{} references break the layers:\n{}", report.len(), report.join("\n"));
    assert!(
        crate_bad.is_empty(),
        "{} files name crates they may not:\n{}",
        crate_bad.len(),
        crate_bad.join("\n")
    );
}

#[test]
fn a_runtime_named_in_protocol_or_sled_outside_the_store_is_caught() {
    let text = "use serde::Serialize;\nuse tokio::sync::Notify;\nfn f() { let _ = sled::open(\"x\"); }\n";
    let bad = crate_violations("protocol/wire.rs", &module("protocol/wire.rs"), text);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].starts_with("protocol/wire.rs:2: names the crate `tokio`"), "{}", bad[0]);
    assert!(
        crate_violations("server/store/tx.rs", &module("server/store/tx.rs"), "use sled::Tree;").is_empty()
    );
    assert_eq!(
        crate_violations("agent/poll.rs", &module("agent/poll.rs"), "#[tokio::main] fn f() {}").len(),
        1
    );
}

#[test]
fn a_planted_violation_is_caught() {
    let planted = "//! doc naming crate::cli in a comment\n\
                   use crate::client::Enrollment;\n\
                   use crate::{protocol::wire, cli::AgentArgs};\n\
                   fn f() { let _ = \"crate::cli\"; crate::server::run(); }\n";
    let (count, bad) = violations("agent/config.rs", &module("agent/config.rs"), planted);
    assert_eq!(count, 4, "client, protocol, cli and server are named in code");
    let targets: Vec<(usize, &str)> = bad.iter().map(|v| (v.line, v.target.as_str())).collect();
    assert_eq!(targets, [(3, "cli"), (4, "server")]);
    assert!(bad[0].to_string().starts_with("agent/config.rs:3: `agent` names `crate::cli`"), "{}", bad[0]);
}

#[test]
fn super_chains_that_climb_out_are_caught() {
    let text = "use super::state;\nmod tests {\n    use super::super::handler;\n    use super::super::super::cli::x;\n}\n";
    let (_, bad) = violations("agent/config.rs", &module("agent/config.rs"), text);
    let targets: Vec<(usize, &str)> = bad.iter().map(|v| (v.line, v.target.as_str())).collect();
    assert_eq!(targets, [(4, "cli")], "{bad:?}");
    let (_, bad) =
        violations("protocol/wire.rs", &module("protocol/wire.rs"), "use super::super::client::X;");
    assert_eq!(bad.len(), 1, "{bad:?}");
}

#[test]
fn lower_layers_may_be_named_and_unknown_roots_are_refused() {
    let text = "use crate::protocol::wire;\nuse crate::client::C;\nuse crate::agent::x;\n";
    let (_, bad) = violations("cli/run.rs", &module("cli/run.rs"), text);
    assert!(bad.is_empty(), "{bad:?}");
    let (_, bad) = violations("protocol/wire.rs", &module("protocol/wire.rs"), "use crate::client::C;");
    assert_eq!(bad.len(), 1);
    let (_, bad) = violations("server/mod.rs", &module("server/mod.rs"), "use crate::agent::A;");
    assert_eq!(bad.len(), 1, "agent and server are side by side");
    let (_, bad) = violations("client.rs", &module("client.rs"), "let _ = crate::Reexported;");
    assert_eq!(bad.len(), 1, "a name at the root hides its layer");
}

#[test]
fn strings_and_char_literals_are_not_code() {
    let text =
        "let a = '\"'; let b = r#\"crate::cli\"#; let c = 'x'; fn f<'a>(_: &'a str) { crate::cli::x(); }";
    let refs = references(&module("agent/mod.rs"), text);
    assert_eq!(refs, [Reference { line: 1, target: "cli".into() }]);
}
