//! The Debian package: installed with `dpkg -i` in a copy of a minimal Debian 11, it brings the
//! user `orange`, the binary, the units, the completions and the man page; a server started by
//! hand as that user answers `/readyz`; and it purges cleanly.

use std::process::Stdio;

use crate::artifacts::dist_file;
use crate::debian11::Root;
use crate::support::{http, listening_line, stdout_lines};

/// Every file the package must install.
const PACKAGED: &[&str] = &[
    "/usr/bin/orange",
    "/usr/lib/systemd/system/orange-server.service",
    "/usr/lib/systemd/system/orange-server.socket",
    "/usr/lib/systemd/system/orange-agent.service",
    "/usr/lib/sysusers.d/orange.conf",
    "/usr/share/bash-completion/completions/orange",
    "/usr/share/zsh/vendor-completions/_orange",
    "/usr/share/fish/vendor_completions.d/orange.fish",
    "/usr/share/man/man1/orange.1.gz",
];

/// A copy of Debian 11 with the package installed by `dpkg -i`.
fn installed() -> Root {
    let mut root = Root::copy();
    root.mount_proc();
    root.install(&dist_file(".deb"), "/tmp/orange.deb");
    root.run_ok(&["dpkg", "-i", "/tmp/orange.deb"]);
    root
}

#[test]
fn the_deb_installs_on_debian_11_with_its_units_completions_and_man_page() {
    let root = installed();
    let version = root.run_ok(&["/usr/bin/orange", "--version"]);
    assert_eq!(version.trim(), format!("orange {}", env!("CARGO_PKG_VERSION")));
    let listed = root.run_ok(&["dpkg", "-L", "orange"]);
    let listed: Vec<&str> = listed.lines().collect();
    for path in PACKAGED {
        assert!(listed.contains(path), "dpkg -L orange lacks {path}:\n{}", listed.join("\n"));
        assert!(root.host_path(path).is_file(), "{path} is listed but not installed");
    }
    root.run_ok(&["gzip", "--test", "/usr/share/man/man1/orange.1.gz"]);
    let depends = root.run_ok(&["dpkg-query", "--show", "--showformat=${Depends}", "orange"]);
    assert_eq!(depends, "libc6 (>= 2.17)");
    let user = root.run_ok(&["getent", "passwd", "orange"]);
    assert!(user.contains(":/var/lib/orange-server:"), "the user orange has another home: {user}");
}

#[test]
fn a_server_from_the_deb_answers_readyz_as_the_user_orange() {
    let root = installed();
    let ids = root.run_ok(&["sh", "-c", "echo $(id -u orange):$(id -g orange)"]);
    let ids = ids.trim();
    assert!(!ids.starts_with("0:") && ids.len() > 2, "the user orange is missing or root: {ids:?}");
    root.run_ok(&["install", "-d", "-o", "orange", "-g", "orange", "-m", "700", "/var/lib/orange-server"]);
    let log = root.host_path("/server.log");
    let args = ["/usr/bin/orange", "server", "--data", "/var/lib/orange-server", "--listen", "127.0.0.1:0"];
    let mut server = root.spawn(Some(ids), &args, &[], Stdio::piped(), &log);
    let lines = stdout_lines(server.child.stdout.take().expect("piped stdout"));
    let (_, addr) = listening_line(&lines).unwrap_or_else(|why| panic!("the server in Debian 11: {why}"));
    let ready = http(addr, "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 200, "/readyz: {:?}", String::from_utf8_lossy(&ready.body));
    let token = root.host_path("/var/lib/orange-server/admin.token");
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(&token).expect("the server wrote admin.token"),
    );
    assert_eq!(
        owner.to_string(),
        ids.split(':').next().unwrap_or_default(),
        "admin.token is not the user orange's"
    );
}

#[test]
fn the_deb_purges_and_keeps_the_data() {
    let root = installed();
    root.run_ok(&["install", "-d", "-o", "orange", "-g", "orange", "-m", "700", "/var/lib/orange-server"]);
    root.run_ok(&["dpkg", "--purge", "orange"]);
    for path in PACKAGED {
        assert!(!root.host_path(path).exists(), "{path} is left after purge");
    }
    assert!(root.host_path("/var/lib/orange-server").is_dir(), "purge removed the data directory");
}
