//! The systemd unit files in `packaging/systemd/`, checked by systemd's own `systemd-analyze`
//! in a root directory of the test's own: the host's system units, ours beside them, and the
//! binary installed at the path the units name. No systemd needs to run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::support::{BIN, tool};

/// The unit files shipped, as named in `packaging/systemd/`.
const UNITS: [&str; 3] = ["orange-server.service", "orange-server.socket", "orange-agent.service"];

/// The path the units run the binary from.
const INSTALLED_BIN: &str = "usr/bin/orange";

/// A root directory holding the host's system units and ours, with `/bin` pointing at
/// `/usr/bin` (merged /usr) and the `kill` the reload command names; the binary is not
/// installed yet.
struct UnitRoot {
    dir: TempDir,
}

impl UnitRoot {
    fn new() -> Self {
        let dir = TempDir::with_prefix("orange-units-").expect("temp dir");
        let units = dir.path().join("usr/lib/systemd/system");
        copy_dir(Path::new("/usr/lib/systemd/system"), &units);
        let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
        for unit in UNITS {
            std::fs::copy(packaging.join(unit), units.join(unit))
                .unwrap_or_else(|e| panic!("copy {unit}: {e}"));
        }
        std::fs::create_dir_all(dir.path().join("usr/bin")).expect("usr/bin");
        std::os::unix::fs::symlink("usr/bin", dir.path().join("bin")).expect("bin -> usr/bin");
        std::fs::copy(tool("kill", "procps"), dir.path().join("usr/bin/kill")).expect("install kill");
        UnitRoot { dir }
    }

    fn install_binary(&self) {
        std::fs::copy(BIN, self.dir.path().join(INSTALLED_BIN)).expect("install the binary");
    }

    /// `systemd-analyze ARGS... --root=ROOT`.
    fn analyze(&self, args: &[&str]) -> Output {
        Command::new(tool("systemd-analyze", "systemd"))
            .args(args)
            .arg(format!("--root={}", self.dir.path().display()))
            .output()
            .expect("run systemd-analyze")
    }

    /// `systemd-analyze verify` of every unit shipped. The man page check is off: it looks at the
    /// host's manual pages, not the root's.
    fn verify(&self) -> Output {
        let mut args = vec!["verify", "--man=no"];
        args.extend(UNITS);
        self.analyze(&args)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the unit directory");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target: PathBuf = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).expect("read link");
            std::os::unix::fs::symlink(link, &target).expect("copy link");
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy unit");
        }
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn the_units_pass_systemd_analyze_verify_with_the_binary_installed_where_they_name_it() {
    let root = UnitRoot::new();

    let without = root.verify();
    assert!(!without.status.success(), "verify passed without the binary installed:\n{}", text(&without));
    assert!(
        text(&without).contains("/usr/bin/orange"),
        "the failure without the binary should name its path:\n{}",
        text(&without)
    );

    root.install_binary();
    let with = root.verify();
    assert!(with.status.success(), "systemd-analyze verify failed:\n{}", text(&with));
    assert_eq!(text(&with), "", "systemd-analyze verify warned");
}

#[test]
fn the_server_unit_is_hardened_and_the_agent_unit_is_not_by_design() {
    let root = UnitRoot::new();
    root.install_binary();
    // Exposure levels run from 0 (locked down) to 10 (unprotected), ×10 for --threshold; the
    // server unit measures 1.5 ("OK").
    let server = root.analyze(&["security", "--offline=yes", "--threshold=20", "orange-server.service"]);
    assert!(server.status.success(), "the server unit is exposed over 2.0:\n{}", text(&server));
    assert!(text(&server).contains("Overall exposure level for orange-server.service"), "{}", text(&server));
    // The agent runs the operator's commands as root: it has no sandbox, and the check says so.
    let agent = root.analyze(&["security", "--offline=yes", "--threshold=50", "orange-agent.service"]);
    assert!(!agent.status.success(), "the agent unit was expected to be unsandboxed:\n{}", text(&agent));
}
