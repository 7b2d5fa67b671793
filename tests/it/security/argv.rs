//! No secret on argv, where `ps` shows it to every user: the value forms of the secret flags are
//! refused before anything starts, with a message naming the replacement, and the file forms
//! work against a real server.

use super::*;

/// Runs `orange ARGS` with no orange environment and returns its run, which must have failed.
fn refused(args: &[&str]) -> crate::support::Run {
    let run = cli_with(args, &[], Duration::from_secs(20));
    assert_ne!(run.code(), Some(0), "a secret on argv was accepted\n{run}");
    assert_ne!(run.code(), None, "the refused command did not exit by itself\n{run}");
    run
}

#[test]
fn the_server_refuses_an_admin_token_on_argv_and_names_the_replacement() {
    let data = TempDir::new().expect("temp dir");
    let dir = data.path().join("db");
    let dir = dir.to_str().expect("utf-8 path");
    let run = refused(&["server", "--data", dir, "--listen", "127.0.0.1:0", "--admin-token", "s3cret"]);
    assert!(run.stderr.contains("--admin-token-file FILE or ORANGE_ADMIN_TOKEN"), "{run}");
    assert!(!run.stdout.contains("listening"), "the server started\n{run}");
    assert!(!Path::new(dir).exists(), "the refused server created its data directory\n{run}");
}

#[test]
fn the_server_refuses_a_private_enrollment_key_on_argv_but_takes_the_public_one() {
    let data = TempDir::new().expect("temp dir");
    let dir = data.path().join("db");
    let dir = dir.to_str().expect("utf-8 path");
    let run = refused(&["server", "--data", dir, "--listen", "127.0.0.1:0", "--enroll-key", PRIVATE_KEY]);
    assert!(run.stderr.contains("use --enroll-key-file FILE or ORANGE_ENROLL_KEY"), "{run}");
    assert!(!run.stdout.contains("listening"), "the server started\n{run}");
    // The original's public key is no secret: original clients need it, so it stays allowed.
    let server = Server::start(ServerOpts { enroll_key: EnrollKey::Public, ..ServerOpts::default() });
    assert!(server.command.contains(&format!("--enroll-key {BASE_SECRET}")), "{}", server.command);
}

#[test]
fn operator_commands_refuse_a_token_on_argv_and_name_the_replacement() {
    for args in [
        &["agents", "--server", "http://127.0.0.1:9", "--token", "s3cret"][..],
        &["task", "list", "--server", "http://127.0.0.1:9", "--token", "s3cret"][..],
        &["job", "list", "--server", "http://127.0.0.1:9", "--token", "s3cret"][..],
    ] {
        let run = refused(args);
        assert!(run.stderr.contains("use --token-file FILE or ORANGE_TOKEN"), "{run}");
    }
}

#[test]
fn the_token_files_of_the_server_and_the_cli_are_what_counts() {
    let files = TempDir::new().expect("temp dir");
    let from_file = "the-admin-token-in-its-file";
    let server_file = write_secret(files.path(), "server.token", &format!("{from_file}\n"));
    // The environment names another token: the file given on the command line wins over it.
    let server = Server::start(ServerOpts {
        admin_token: Some("the-admin-token-in-the-environment".into()),
        extra_args: vec!["--admin-token-file".into(), server_file.display().to_string()],
        ..ServerOpts::default()
    });
    let cli_file = write_secret(files.path(), "cli.token", from_file);
    let cli_file = cli_file.to_str().expect("utf-8 path");
    let run = cli_with(
        &["agents", "--json", "--server", &server.url, "--token-file", cli_file],
        &[],
        Duration::from_secs(20),
    );
    run.assert_success();
    let wrong = cli_with(
        &["agents", "--server", &server.url],
        &[("ORANGE_TOKEN", "the-admin-token-in-the-environment")],
        Duration::from_secs(20),
    );
    assert_ne!(wrong.code(), Some(0), "the environment's token was taken over the server's file\n{wrong}");
    assert!(wrong.stderr.contains("refused the admin token"), "{wrong}");
}
