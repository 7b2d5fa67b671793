//! `cargo xtask dist`: the release artifacts in `target/dist/`: the portable binary `orange`
//! (linked by cargo-zigbuild against glibc 2.17, checked to need nothing newer), the Debian
//! package (cargo-deb, `[package.metadata.deb]` in Cargo.toml), the tarball
//! `orange-VERSION-x86_64-linux.tar.gz`, and `SHA256SUMS` over the three.
//!
//! The shell completions and the man page come from the built binary itself (`orange
//! completions SHELL`, `orange man`); they, and the binary, are staged in `target/dist-stage/`,
//! where the package's asset list finds them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::elf::{self, MAX_GLIBC};
use crate::toolchain::{self, Toolchain};
use crate::tools::{cargo, run};

/// The environment variable naming the artifacts directory, read by the tests.
pub const DIST_ENV: &str = "ORANGE_DIST_DIR";
/// The target cargo-zigbuild links for: x86_64 Linux, glibc 2.17 and newer.
const ZIG_TARGET: &str = "x86_64-unknown-linux-gnu.2.17";
/// Generated files: the command line that prints each, and its path in the stage directory.
const GENERATED: &[(&[&str], &str)] = &[
    (&["completions", "bash"], "completions/orange.bash"),
    (&["completions", "zsh"], "completions/_orange"),
    (&["completions", "fish"], "completions/orange.fish"),
    (&["man"], "man/orange.1"),
];
/// The unit files and the sysusers file shipped from packaging/systemd/.
const SYSTEMD_FILES: &[&str] =
    &["orange-server.service", "orange-server.socket", "orange-agent.service", "orange.sysusers.conf"];
/// The most a generated file may be: the completions and the man page are a few tens of KB.
const MAX_GENERATED_BYTES: usize = 4 << 20;

/// Builds every artifact into `target/dist/` (emptied first) and returns that directory.
pub fn dist(cache: &Path) -> Result<PathBuf, String> {
    let root = workspace_root()?;
    let version = package_version(&root)?;
    let tools = toolchain::ensure(cache)?;
    let built = build_portable(&root, &tools)?;
    check_glibc(&built)?;
    let stage = fresh_dir(&root.join("target/dist-stage"))?;
    copy(&built, &stage.join("orange"))?;
    generate(&stage)?;
    let dist = fresh_dir(&root.join("target/dist"))?;
    copy(&built, &dist.join("orange"))?;
    let deb = package_deb(&root, &tools, &dist)?;
    let tarball = package_tarball(&root, &stage, &dist, &version)?;
    write_sums(&dist, &["orange", &deb, &tarball])?;
    eprintln!("xtask: artifacts in {}: orange, {deb}, {tarball}, SHA256SUMS", dist.display());
    Ok(dist)
}

/// The workspace's root: the parent of this crate's directory.
fn workspace_root() -> Result<PathBuf, String> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(Path::to_owned).ok_or_else(|| "xtask has no parent directory".to_owned())
}

/// The `version` of `[package]` in the root Cargo.toml.
fn package_version(root: &Path) -> Result<String, String> {
    let manifest = read_text(&root.join("Cargo.toml"))?;
    let sections = format!("\n{manifest}");
    let package = sections.split("\n[").find(|section| section.starts_with("package]"));
    let line = package.and_then(|section| section.lines().find(|l| l.starts_with("version")));
    let version = line.and_then(|l| l.split('"').nth(1));
    version.map(str::to_owned).ok_or_else(|| "no version in [package] of Cargo.toml".to_owned())
}

/// `cargo zigbuild --release` for [`ZIG_TARGET`]; returns the built binary.
fn build_portable(root: &Path, tools: &Toolchain) -> Result<PathBuf, String> {
    run(cargo()
        .args([
            "zigbuild",
            "--release",
            "--locked",
            "--package",
            "orange",
            "--bin",
            "orange",
            "--target",
            ZIG_TARGET,
        ])
        .current_dir(root)
        // The artifacts are always built under the checkout's `target/`, where the package's
        // asset paths point, whatever target directory the caller's own builds use.
        .env_remove("CARGO_TARGET_DIR")
        .env("PATH", tools.path()?))?;
    // cargo-zigbuild drops the glibc suffix from the target directory's name.
    Ok(root.join("target/x86_64-unknown-linux-gnu/release/orange"))
}

/// Fails naming the version unless every `GLIBC_` version `binary` needs is at most [`MAX_GLIBC`].
fn check_glibc(binary: &Path) -> Result<(), String> {
    let bytes = std::fs::read(binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    let names = elf::needed_versions(&bytes).map_err(|e| format!("{}: {e}", binary.display()))?;
    match elf::highest_glibc(&names) {
        None => Err(format!("{} needs no GLIBC_ version: not a glibc binary?", binary.display())),
        Some((name, numbers)) if numbers.as_slice() > MAX_GLIBC.as_slice() => Err(format!(
            "{} needs {name}, newer than glibc {}.{}: it would not start on older systems",
            binary.display(),
            MAX_GLIBC[0],
            MAX_GLIBC[1]
        )),
        Some((name, _)) => {
            eprintln!("xtask: {} needs glibc {name} at most", binary.display());
            Ok(())
        }
    }
}

/// Writes the completions and the man page (plain and gzipped) into `stage` by running
/// `stage/orange`.
fn generate(stage: &Path) -> Result<(), String> {
    let binary = stage.join("orange");
    for (args, file) in GENERATED {
        let text = output_of(&binary, args)?;
        let path = stage.join(file);
        let dir = path.parent().ok_or_else(|| format!("{file} has no directory"))?;
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let man = stage.join("man/orange.1");
    let gzipped = std::fs::File::create(stage.join("man/orange.1.gz"))
        .map_err(|e| format!("cannot create orange.1.gz: {e}"))?;
    run(Command::new("gzip").args(["-9", "--no-name", "--stdout"]).arg(&man).stdout(gzipped))
}

/// The standard output of `binary ARGS`; fails with its status and standard error unless it
/// succeeds and prints something.
fn output_of(binary: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let shown = format!("orange {}", args.join(" "));
    let out = Command::new(binary).args(args).output().map_err(|e| format!("cannot run {shown}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "`{shown}` failed ({}): {}\nthe binary must have the `completions` and `man` commands to be packaged",
            out.status,
            stderr.trim()
        ));
    }
    if out.stdout.is_empty() || out.stdout.len() > MAX_GENERATED_BYTES {
        return Err(format!(
            "`{shown}` printed {} bytes, expected 1 to {MAX_GENERATED_BYTES}",
            out.stdout.len()
        ));
    }
    Ok(out.stdout)
}

/// `cargo deb` from the staged files into `dist`; returns the package's file name.
fn package_deb(root: &Path, tools: &Toolchain, dist: &Path) -> Result<String, String> {
    run(cargo()
        .args(["deb", "--no-build", "--no-strip", "--package", "orange", "--output"])
        .arg(dist)
        .current_dir(root)
        .env_remove("CARGO_TARGET_DIR")
        .env("PATH", tools.path()?))?;
    let debs = file_names(dist, ".deb")?;
    match debs.as_slice() {
        [one] => Ok(one.clone()),
        other => Err(format!("cargo deb left {} packages in {}, expected one", other.len(), dist.display())),
    }
}

/// Puts the binary, units, completions, man page, README and LICENSE (if any) under
/// `orange-VERSION-x86_64-linux/` in a tarball in `dist`; returns its file name.
fn package_tarball(root: &Path, stage: &Path, dist: &Path, version: &str) -> Result<String, String> {
    let name = format!("orange-{version}-x86_64-linux");
    let top = fresh_dir(&stage.join(&name))?;
    copy(&stage.join("orange"), &top.join("orange"))?;
    for doc in ["README.md", "LICENSE"] {
        if root.join(doc).is_file() {
            copy(&root.join(doc), &top.join(doc))?;
        }
    }
    for file in SYSTEMD_FILES {
        copy(&root.join("packaging/systemd").join(file), &top.join("systemd").join(file))?;
    }
    for (_, file) in GENERATED {
        copy(&stage.join(file), &top.join(file))?;
    }
    let tarball = format!("{name}.tar.gz");
    run(Command::new("tar")
        .args(["--create", "--gzip", "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--file"])
        .arg(dist.join(&tarball))
        .arg("--directory")
        .arg(stage)
        .arg(&name))?;
    Ok(tarball)
}

/// Writes `dist/SHA256SUMS` over `files` (names in `dist`), as `sha256sum -c` reads it.
fn write_sums(dist: &Path, files: &[&str]) -> Result<(), String> {
    let out = Command::new("sha256sum")
        .args(files)
        .current_dir(dist)
        .output()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    if !out.status.success() {
        return Err(format!("sha256sum failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    std::fs::write(dist.join("SHA256SUMS"), out.stdout).map_err(|e| format!("cannot write SHA256SUMS: {e}"))
}

/// The names of the files in `dir` ending with `suffix`.
fn file_names(dir: &Path, suffix: &str) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let names = entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok());
    Ok(names.filter(|name| name.ends_with(suffix)).collect())
}

/// `dir`, emptied (or made).
fn fresh_dir(dir: &Path) -> Result<PathBuf, String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir.to_owned())
}

/// Copies `from` to `to`, making `to`'s directory; permissions come along.
fn copy(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
