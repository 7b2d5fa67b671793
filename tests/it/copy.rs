//! `orange cp` with the real binaries: a file of several MiB pushed to two agents lands with its
//! bytes, mode and checksum, and pulls back identical; agents refuse without a root (naming the
//! flag), outside their roots, and through `..` or a symlink; the server's `--max-file-mb` refuses
//! a larger file both ways with a clear message; an original client is never handed a copy.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::{Agent, AgentOpts, GoAgent, Run, Server, ServerOpts};

/// An agent allowed to write under `write` and read under `read`.
fn copy_agent(server: &Server, app_id: &str, write: &[&Path], read: &[&Path]) -> Agent {
    let mut extra_args = Vec::new();
    for dir in write {
        extra_args.extend(["--allow-write-root".to_owned(), dir.display().to_string()]);
    }
    for dir in read {
        extra_args.extend(["--allow-read-root".to_owned(), dir.display().to_string()]);
    }
    let opts = AgentOpts { labels: vec!["role=web".into()], extra_args, ..AgentOpts::default() };
    Agent::start_online(server, app_id, opts)
}

/// `orange ARGS` against `server`, given a minute.
fn orange(server: &Server, args: &[&str]) -> Run {
    server.operator(args).deadline(Duration::from_secs(60)).run()
}

/// `len` bytes that do not repeat in short cycles.
fn sample(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

/// Asserts `run` failed with exit status 1 and said `needle` on stdout or stderr.
fn assert_refused(run: &Run, needle: &str) {
    assert_eq!(run.code(), Some(1), "expected a failure\n{run}");
    assert!(run.stdout.contains(needle) || run.stderr.contains(needle), "expected {needle:?}\n{run}");
}

#[test]
fn a_file_of_several_mib_pushed_to_two_agents_lands_whole_and_pulls_back_identical() {
    let server = Server::start(ServerOpts::default());
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path().join("root");
    std::fs::create_dir(&root).expect("mkdir root");
    let root = root.canonicalize().expect("canonical root");
    let _web1 = copy_agent(&server, "web-1", &[&root], &[&root]);
    let _web2 = copy_agent(&server, "web-2", &[&root], &[&root]);

    // 3.5 MiB: several agent chunks (1 MiB) and many stored pieces.
    let bytes = sample(3 * 1024 * 1024 + 512 * 1024);
    let local = work.path().join("app.bin");
    std::fs::write(&local, &bytes).expect("write local");
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let remote = root.join("app.bin");
    let target = format!(":{}", remote.display());
    let run =
        orange(&server, &["cp", local.to_str().expect("utf-8"), "--label", "role=web", &target, "--json"]);
    run.assert_success();
    let report = run.json();
    assert_eq!(report["job"]["counts"]["succeeded"], 2, "{run}");
    let said = format!(
        "wrote {} bytes to {} (mode 0640, sha256 {})\n",
        bytes.len(),
        remote.display(),
        sha256(&bytes)
    );
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{run}");
    for result in results {
        assert_eq!(result["stdout"], said, "{run}");
    }
    let written = std::fs::read(&remote).expect("the pushed file");
    assert_eq!(sha256(&written), sha256(&bytes));
    assert_eq!(mode_of(&remote), 0o640, "the local mode is kept");
    let leftovers: Vec<_> =
        std::fs::read_dir(&root).expect("read root").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left: {leftovers:?}");

    // --mode sets another mode; the file is replaced whole.
    let run = orange(
        &server,
        &["cp", local.to_str().expect("utf-8"), "--appid", "web-1", "--mode", "600", &target],
    );
    run.assert_success();
    assert_eq!(mode_of(&remote), 0o600);

    // Pull it back into a directory: the remote name and mode are kept, the bytes identical.
    let back = work.path().join("back");
    std::fs::create_dir(&back).expect("mkdir back");
    let run = orange(&server, &["cp", "--appid", "web-2", &target, back.to_str().expect("utf-8")]);
    run.assert_success();
    assert!(run.stderr.contains(&sha256(&bytes)), "the checksum is reported\n{run}");
    let pulled = back.join("app.bin");
    assert_eq!(std::fs::read(&pulled).expect("pulled file"), bytes);
    assert_eq!(mode_of(&pulled), 0o600);

    // An empty file goes both ways too.
    let empty = work.path().join("empty");
    std::fs::write(&empty, "").expect("write empty");
    let empty_target = format!(":{}", root.join("empty").display());
    orange(&server, &["cp", empty.to_str().expect("utf-8"), "--appid", "web-1", &empty_target])
        .assert_success();
    assert_eq!(std::fs::read(root.join("empty")).expect("empty pushed"), b"");
    let empty_back = work.path().join("empty-back");
    let run =
        orange(&server, &["cp", "--appid", "web-1", &empty_target, empty_back.to_str().expect("utf-8")]);
    run.assert_success();
    assert_eq!(std::fs::read(&empty_back).expect("empty pulled"), b"");

    let audit = orange(&server, &["audit", "--json"]);
    audit.assert_success();
    assert!(audit.stdout.contains("file.upload") && audit.stdout.contains(&sha256(&bytes)), "{audit}");
}

#[test]
fn agents_refuse_copies_without_a_root_outside_their_roots_and_through_dotdot_or_a_symlink() {
    let server = Server::start(ServerOpts::default());
    let work = tempfile::tempdir().expect("temp dir");
    let (root, outside) = (work.path().join("root"), work.path().join("outside"));
    std::fs::create_dir(&root).expect("mkdir root");
    std::fs::create_dir(&outside).expect("mkdir outside");
    let (root, outside) = (root.canonicalize().expect("root"), outside.canonicalize().expect("outside"));
    std::fs::write(outside.join("secret"), "secret\n").expect("write secret");
    std::os::unix::fs::symlink(&outside, root.join("door")).expect("symlink dir");
    std::os::unix::fs::symlink(outside.join("secret"), root.join("secret-link")).expect("symlink file");
    let local = work.path().join("f.txt");
    std::fs::write(&local, "hello\n").expect("write local");
    let local = local.to_str().expect("utf-8");
    let _bare = copy_agent(&server, "bare", &[], &[]);
    let _web = copy_agent(&server, "web-1", &[&root], &[&root]);

    let to = |path: &Path| format!(":{}", path.display());
    let run = orange(&server, &["cp", local, "--appid", "bare", &to(&root.join("f.txt"))]);
    assert_refused(&run, "--allow-write-root");
    let run = orange(
        &server,
        &["cp", "--appid", "bare", &to(&root.join("f.txt")), work.path().to_str().expect("utf-8")],
    );
    assert_refused(&run, "--allow-read-root");

    let run = orange(&server, &["cp", local, "--appid", "web-1", &to(&outside.join("f.txt"))]);
    assert_refused(&run, "outside the directories this agent may write");
    let dotdot = format!(":{}/../outside/f.txt", root.display());
    let run = orange(&server, &["cp", local, "--appid", "web-1", &dotdot]);
    assert_refused(&run, "outside the directories this agent may write");
    let run = orange(&server, &["cp", local, "--appid", "web-1", &to(&root.join("door/f.txt"))]);
    assert_refused(&run, "outside the directories this agent may write");
    assert!(!outside.join("f.txt").exists(), "nothing was written outside the root");

    let back = work.path().join("back.txt");
    let back = back.to_str().expect("utf-8");
    let run = orange(&server, &["cp", "--appid", "web-1", &to(&root.join("secret-link")), back]);
    assert_refused(&run, "outside the directories this agent may read");
    let run =
        orange(&server, &["cp", "--appid", "web-1", &format!(":{}/../outside/secret", root.display()), back]);
    assert_refused(&run, "outside the directories this agent may read");
    assert!(!Path::new(back).exists(), "nothing was pulled");

    let run = orange(&server, &["cp", local, "--appid", "web-1", ":relative/f.txt"]);
    assert_eq!(run.code(), Some(2), "a relative remote path is a usage error\n{run}");
    assert!(run.stderr.contains("not absolute"), "{run}");
}

#[test]
fn the_servers_file_limit_refuses_a_larger_file_both_ways() {
    let opts = ServerOpts { extra_args: vec!["--max-file-mb".into(), "1".into()], ..ServerOpts::default() };
    let server = Server::start(opts);
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path().join("root");
    std::fs::create_dir(&root).expect("mkdir root");
    let root = root.canonicalize().expect("root");
    let _web = copy_agent(&server, "web-1", &[&root], &[&root]);
    let big = work.path().join("big.bin");
    std::fs::write(&big, sample(2 * 1024 * 1024)).expect("write big");

    let target = format!(":{}", root.join("big.bin").display());
    let run = orange(&server, &["cp", big.to_str().expect("utf-8"), "--appid", "web-1", &target]);
    assert_refused(&run, "--max-file-mb");
    assert!(run.stderr.contains("413"), "{run}");
    assert!(!root.join("big.bin").exists());

    // A file already on the host, larger than the limit, is not pulled.
    std::fs::copy(&big, root.join("big.bin")).expect("copy on host");
    let back = work.path().join("back.bin");
    let run = orange(&server, &["cp", "--appid", "web-1", &target, back.to_str().expect("utf-8")]);
    assert_refused(&run, "--max-file-mb");
    assert!(!back.exists());
}

#[test]
fn an_original_client_is_never_handed_a_copy() {
    let server = Server::start(ServerOpts::default());
    let _go = GoAgent::new(&server, "go-1", "s1").registered();
    let work = tempfile::tempdir().expect("temp dir");
    let local = work.path().join("f.txt");
    std::fs::write(&local, "hello\n").expect("write local");

    let run = orange(&server, &["cp", local.to_str().expect("utf-8"), "--appid", "go-1", ":/tmp/f.txt"]);
    assert_refused(&run, "does not support the task feature files");
    let run =
        orange(&server, &["cp", "--appid", "go-1", ":/etc/hostname", work.path().to_str().expect("utf-8")]);
    assert_refused(&run, "does not support the task feature files");
    let tasks = orange(&server, &["task", "list", "--agent", "go-1", "--status", "queued", "--json"]);
    tasks.assert_success();
    assert_eq!(tasks.json()["tasks"].as_array().map(Vec::len), Some(0), "nothing queued\n{tasks}");
}
