//! `orange server --store 'postgres://...?sslmode=require&sslrootcert=CA.pem'`: the fleet kept
//! in a PostgreSQL that takes TLS connections only (its `pg_hba.conf` refuses plain ones), its
//! certificate checked against the CA given in the URL.

use std::time::Duration;

use tempfile::TempDir;

use crate::security::files_and_tls::{make_ca, make_leaf};
use crate::support::postgres::{on_own_thread, start_tls};
use crate::support::{Agent, AgentOpts, Server, ServerOpts, cli_with};

#[test]
fn a_server_speaks_tls_to_postgresql_and_refuses_a_certificate_its_ca_did_not_sign() {
    let pki = TempDir::with_prefix("orange-pg-pki-").expect("a temp dir");
    make_ca(pki.path(), "test-ca");
    make_ca(pki.path(), "other-ca");
    make_leaf(pki.path(), "test-ca");
    let database = on_own_thread(|| start_tls(&pki.path().join("leaf.pem"), &pki.path().join("leaf.key")))
        .unwrap_or_else(|e| panic!("{e}"));
    let ca = |name: &str| pki.path().join(format!("{name}.pem")).display().to_string();

    // Plain connections are refused, so a server that runs tasks spoke TLS.
    let url = database.url(&format!("sslmode=require&sslrootcert={}", ca("test-ca")));
    let server = Server::start(ServerOpts {
        poll_window: Some(2),
        extra_args: vec!["--store".into(), url],
        ..ServerOpts::default()
    });
    let _agent = Agent::start_online(&server, "pg-tls1", AgentOpts::shell());
    let run = server.operator(&["task", "run", "--appid", "pg-tls1", "--", "true"]).run();
    run.assert_success();

    let plain = refusal(&database.url("sslmode=disable"));
    assert!(
        plain.contains("cannot connect to the database") && plain.contains("pg_hba.conf rejects"),
        "{plain}"
    );

    let wrong_ca = refusal(&database.url(&format!("sslmode=require&sslrootcert={}", ca("other-ca"))));
    assert!(
        wrong_ca.contains("cannot connect to the database") && wrong_ca.contains("UnknownIssuer"),
        "{wrong_ca}"
    );
    let wrong_ca = refusal(&database.url(&format!("sslmode=verify-ca&sslrootcert={}", ca("other-ca"))));
    assert!(wrong_ca.contains("UnknownIssuer"), "verify-ca checks the chain: {wrong_ca}");

    // Without a root file `require` takes any certificate (as libpq does); `verify-ca` with
    // the right one checks the chain.
    for options in ["sslmode=require".to_owned(), format!("sslmode=verify-ca&sslrootcert={}", ca("test-ca"))]
    {
        let server = Server::start(ServerOpts {
            extra_args: vec!["--store".into(), database.url(&options)],
            ..ServerOpts::default()
        });
        let listed = server.operator(&["agents", "--json"]).run();
        listed.assert_success();
        assert!(listed.stdout.contains("pg-tls1"), "{options}: {listed}");
    }
}

/// Runs `orange server --store url`, which must stop by itself with an error; returns what it
/// said.
fn refusal(url: &str) -> String {
    let data = TempDir::with_prefix("orange-pg-tls-refused-").expect("a temp dir");
    let data = data.path().to_str().expect("a UTF-8 path");
    let args = ["server", "--data", data, "--listen", "127.0.0.1:0", "--store", url];
    let run = cli_with(&args, &[], Duration::from_secs(60));
    assert_ne!(run.code(), Some(0), "the server must refuse to start\n{run}");
    assert!(run.code().is_some(), "the server must stop by itself\n{run}");
    run.stderr.clone()
}
