//! The tarball and `SHA256SUMS`: the tarball holds the binary (the very one of the artifacts),
//! the units, the completions, the man page and the README under one top directory, and
//! `sha256sum -c` verifies every artifact and catches a changed byte.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::artifacts::{dist_dir, dist_file};

/// Every file the tarball holds, below its top directory.
const CONTENTS: &[&str] = &[
    "orange",
    "README.md",
    "systemd/orange-server.service",
    "systemd/orange-server.socket",
    "systemd/orange-agent.service",
    "systemd/orange.sysusers.conf",
    "completions/orange.bash",
    "completions/_orange",
    "completions/orange.fish",
    "man/orange.1",
];

#[test]
fn the_tarball_holds_the_binary_units_completions_and_man_page() {
    let tarball = dist_file(".tar.gz");
    let top = format!("orange-{}-x86_64-linux", env!("CARGO_PKG_VERSION"));
    assert_eq!(tarball.file_name().and_then(|n| n.to_str()), Some(format!("{top}.tar.gz").as_str()));
    let unpacked = TempDir::with_prefix("orange-tarball-").expect("create temp dir");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xzf {} failed ({status})", tarball.display());
    for file in CONTENTS {
        let path = unpacked.path().join(&top).join(file);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "{top}/{file} is missing or empty in the tarball");
    }
    let packed = std::fs::read(unpacked.path().join(&top).join("orange")).expect("read the packed binary");
    assert!(
        packed == std::fs::read(dist_dir().join("orange")).expect("read the binary"),
        "the tarball's binary differs"
    );
}

#[test]
fn sha256sums_verifies_every_artifact() {
    let dist = dist_dir();
    let out = sha256sum_check(&dist);
    assert!(out.status.success(), "sha256sum -c failed:\n{}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for artifact in [dist.join("orange"), dist_file(".deb"), dist_file(".tar.gz")] {
        let name = artifact.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        assert!(stdout.lines().any(|l| l == format!("{name}: OK")), "{name} is not verified:\n{stdout}");
    }
}

#[test]
fn sha256sums_catches_a_changed_byte() {
    let copy = TempDir::with_prefix("orange-sums-").expect("create temp dir");
    for entry in std::fs::read_dir(dist_dir()).expect("read the artifacts") {
        let path = entry.expect("artifact entry").path();
        std::fs::copy(&path, copy.path().join(path.file_name().expect("a file name")))
            .expect("copy an artifact");
    }
    let tarball = copy.path().join(dist_file(".tar.gz").file_name().expect("a file name"));
    let mut bytes = std::fs::read(&tarball).expect("read the tarball copy");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&tarball, bytes).expect("write the changed tarball");
    let out = sha256sum_check(copy.path());
    assert!(!out.status.success(), "sha256sum -c accepted a changed tarball");
    assert!(String::from_utf8_lossy(&out.stdout).contains("tar.gz: FAILED"));
}

fn sha256sum_check(dir: &Path) -> std::process::Output {
    Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(dir).output().expect("run sha256sum")
}
