//! TLS verification by the CLI and the agent's client, the data directory's mode, and the
//! secrets the server generates.

use super::*;

/// Runs `openssl` with `args` in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new(crate::support::tool("openssl", "openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(output.status.success(), "openssl {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

/// Makes a CA named `name` in `dir`: `NAME.key`, `NAME.pem`.
pub(crate) fn make_ca(dir: &Path, name: &str) {
    let (key, pem, subject) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN={name}"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &subject,
            "-days",
            "2",
            "-keyout",
            &key,
            "-out",
            &pem,
        ],
    );
}

/// Makes a certificate for 127.0.0.1 signed by the CA `ca` in `dir`: `leaf.key`, `leaf.pem`.
pub(crate) fn make_leaf(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
    );
}

#[test]
fn the_cli_verifies_the_server_certificate() {
    let pki = TempDir::with_prefix("orange-pki-").expect("temp dir");
    make_ca(pki.path(), "test-ca");
    make_ca(pki.path(), "other-ca");
    make_leaf(pki.path(), "test-ca");
    let token = "tls-test-admin-token-9a8b";
    let server = Server::start(ServerOpts {
        tls: Some((pki.path().join("leaf.pem"), pki.path().join("leaf.key"))),
        admin_token: Some(token.into()),
        enroll_key: EnrollKey::Private(PRIVATE_KEY.into()),
        ..ServerOpts::default()
    });
    assert!(server.url.starts_with("https://127.0.0.1:"), "listening line: {}", server.url);
    let ca = pki.path().join("test-ca.pem");
    let other = pki.path().join("other-ca.pem");
    let (ca, other) = (ca.to_str().expect("utf-8 path"), other.to_str().expect("utf-8 path"));
    let args = ["agents", "--server", server.url.as_str(), "--json"];
    let deadline = Duration::from_secs(30);
    let warning = "TLS verification is off";
    // With the private CA: verified, no warning.
    let run = cli_with(
        &args,
        &[("ORANGE_TOKEN", token), ("ORANGE_CA_FILE", ca), ("ORANGE_INSECURE", "")],
        deadline,
    );
    run.assert_success();
    assert!(run.json()["agents"].is_array(), "{run}");
    assert!(!run.stderr.contains(warning), "{run}");
    // With the system roots, or another CA: a certificate error, and nothing is sent.
    for env in [
        vec![("ORANGE_CA_FILE", ""), ("ORANGE_INSECURE", "")],
        vec![("ORANGE_CA_FILE", other), ("ORANGE_INSECURE", "")],
    ] {
        let mut env = env;
        env.push(("ORANGE_TOKEN", token));
        let run = cli_with(&args, &env, deadline);
        assert_eq!(run.code(), Some(1), "{run}");
        assert!(
            run.stderr.contains("certificate not trusted") && run.stderr.contains("UnknownIssuer"),
            "{run}"
        );
        assert!(run.stderr.contains("ORANGE_CA_FILE"), "names how to trust it\n{run}");
        assert!(run.stdout.is_empty(), "{run}");
    }
    // Verification off: works, and says so on stderr.
    let run = cli_with(
        &args,
        &[("ORANGE_TOKEN", token), ("ORANGE_CA_FILE", ""), ("ORANGE_INSECURE", "1")],
        deadline,
    );
    run.assert_success();
    assert!(run.stderr.contains(warning), "no warning that verification is off\n{run}");
    // Plain HTTP to the HTTPS port gets nowhere.
    let plain = format!("http://{}", server.addr);
    let run = cli_with(&["agents", "--server", &plain], &[("ORANGE_TOKEN", token)], deadline);
    assert_ne!(run.code(), Some(0), "{run}");
    // The agent's client verifies the same way.
    let trusted = TlsSettings::new(Some(Path::new(ca)), false).expect("CA file");
    let agent = AgentClient::with_tls(&server.url, "w1", "s1", &trusted);
    agent
        .register(&register_request("w1", "s1"), &Enrollment::Key(PRIVATE_KEY.into()))
        .expect("register over TLS");
    agent.ping().expect("ping over TLS");
    let untrusted = TlsSettings::new(Some(Path::new(other)), false).expect("CA file");
    match AgentClient::with_tls(&server.url, "w1", "s1", &untrusted).ping() {
        Err(ClientError::Transport { reason, .. }) => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        other => panic!("an agent trusting another CA reached the server: {other:?}"),
    }
}

/// `cert.pem` and `key.pem` in `dir` become the leaf made in `pki` (written aside, then
/// renamed over, as a certificate renewal does).
fn install_leaf(pki: &Path, dir: &Path) {
    for (from, to) in [("leaf.pem", "cert.pem"), ("leaf.key", "key.pem")] {
        let aside = dir.join(format!("{to}.new"));
        std::fs::copy(pki.join(from), &aside).expect("copy the leaf");
        std::fs::rename(&aside, dir.join(to)).expect("rename the leaf into place");
    }
}

/// Whether the CLI, trusting only the CA `ca`, reaches `server`.
fn cli_trusts(server: &Server, ca: &Path) -> bool {
    let ca = ca.to_str().expect("utf-8 path");
    let args = ["agents", "--server", server.url.as_str(), "--json"];
    let env = [("ORANGE_TOKEN", server.token.as_str()), ("ORANGE_CA_FILE", ca), ("ORANGE_INSECURE", "")];
    cli_with(&args, &env, Duration::from_secs(30)).code() == Some(0)
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let (first, second) =
        (TempDir::with_prefix("orange-pki-").unwrap(), TempDir::with_prefix("orange-pki-").unwrap());
    make_ca(first.path(), "first-ca");
    make_leaf(first.path(), "first-ca");
    make_ca(second.path(), "second-ca");
    make_leaf(second.path(), "second-ca");
    let served = TempDir::with_prefix("orange-tls-").expect("temp dir");
    install_leaf(first.path(), served.path());
    let mut server = Server::start(ServerOpts {
        tls: Some((served.path().join("cert.pem"), served.path().join("key.pem"))),
        enroll_key: EnrollKey::Private(PRIVATE_KEY.into()),
        ..ServerOpts::default()
    });
    let (first_ca, second_ca) = (first.path().join("first-ca.pem"), second.path().join("second-ca.pem"));
    assert!(cli_trusts(&server, &first_ca), "serves the first certificate\n{}", server.stderr());
    assert!(!cli_trusts(&server, &second_ca));
    // Renewed on disk: served only after SIGHUP.
    install_leaf(second.path(), served.path());
    assert!(cli_trusts(&server, &first_ca), "the files alone change nothing until SIGHUP");
    server.sighup();
    wait_until(Duration::from_secs(30), "the renewed certificate to be served", || {
        cli_trusts(&server, &second_ca)
    });
    assert!(!cli_trusts(&server, &first_ca), "the old certificate is no longer served");
    assert!(server.stderr().contains("reloaded the TLS certificate"), "{}", server.stderr());
    // A broken renewal is refused, and the certificate served so far stays.
    std::fs::write(served.path().join("cert.pem"), "not a certificate").expect("write");
    server.sighup();
    wait_until(Duration::from_secs(30), "the refusal to be logged", || {
        server.stderr().contains("cannot reload the TLS certificate; still serving the previous one")
    });
    assert!(server.is_alive(), "a broken renewal stopped the server\n{}", server.stderr());
    assert!(cli_trusts(&server, &second_ca), "still serves the last good certificate");
}

#[test]
fn a_data_dir_others_can_write_is_refused() {
    let secrets = TempDir::with_prefix("orange-secrets-").expect("temp dir");
    for mode in [0o777, 0o770, 0o702] {
        let dir = TempDir::with_prefix("orange-data-").expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
        let path = dir.path().to_str().expect("utf-8 path");
        let key = write_secret(secrets.path(), "enroll.key", PRIVATE_KEY);
        let key = key.to_str().expect("utf-8 path");
        let run = cli_with(
            &["server", "--data", path, "--listen", "127.0.0.1:0", "--enroll-key-file", key],
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(run.code(), Some(1), "mode {mode:o}\n{run}");
        let expected = format!(
            "data directory {path} is writable by group or others (mode {mode:o}); run `chmod 700 {path}`"
        );
        assert!(run.stderr.contains(&expected), "mode {mode:o}\n{run}");
        let left: Vec<PathBuf> =
            std::fs::read_dir(dir.path()).expect("read dir").map(|e| e.expect("entry").path()).collect();
        assert!(left.is_empty(), "mode {mode:o}: the refused server wrote {left:?}");
    }
    // Readable by others is not writable by them: it starts, and makes the directory private.
    let dir = TempDir::with_prefix("orange-data-").expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut server = Server::start(ServerOpts {
        data_dir: Some(dir.path().to_owned()),
        enroll_key: EnrollKey::Private(PRIVATE_KEY.into()),
        ..ServerOpts::default()
    });
    assert!(server.is_alive());
    let mode = std::fs::metadata(dir.path()).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn generated_secrets_are_private_and_the_public_key_no_longer_enrolls() {
    let parent = TempDir::with_prefix("orange-parent-").expect("temp dir");
    let data = parent.path().join("data");
    let server = Server::start(ServerOpts {
        data_dir: Some(data.clone()),
        enroll_key: EnrollKey::Generated,
        ..ServerOpts::default()
    });
    let mode = |path: &Path| std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join("admin.token")), 0o600, "admin.token");
    assert_eq!(mode(&data.join("enroll.key")), 0o600, "enroll.key");
    let data_arg = data.to_str().expect("utf-8 path");
    let run = cli_with(&["enroll-key", "--data", data_arg], &[], Duration::from_secs(10));
    run.assert_success();
    let key = run.stdout.trim().to_owned();
    assert_eq!(key, std::fs::read_to_string(data.join("enroll.key")).expect("enroll.key").trim());
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()), "key {key:?}");
    // The original's public key does not enroll; the printed key does.
    let agent = GoAgent { addr: server.addr, app_id: "w1".into(), secret: "agent-secret-4e7f1b".into() };
    assert_refused(&agent.register(), &orange::server::enroll::not_proven("w1"));
    let body = json!({"app_id": "w1", "secret": agent.secret}).to_string();
    assert_eq!(agent.send_signed(REGISTER, &key, body.as_bytes()).json()["code"], 0);
    assert_eq!(agent.ping()["code"], 0);
    // No secret reaches the log.
    let admin = std::fs::read_to_string(data.join("admin.token")).expect("admin.token");
    let log = server.stderr();
    for secret in [key.as_str(), admin.trim(), agent.secret.as_str()] {
        assert!(!log.contains(secret), "a secret is in the server's log:\n{log}");
    }
}
