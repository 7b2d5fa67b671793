//! Tests of `copy.rs`: a data directory to PostgreSQL and back, a backup file to PostgreSQL,
//! every tree equal at the end and ids going on above the source's; a destination that holds
//! anything is refused and left as it was.

use std::collections::BTreeMap;
use std::path::Path;

use super::super::compact::Dump;
use super::super::compact_tests::fill;
use super::super::job_tests::create;
use super::super::test_engines::{Engine, Place};
use super::super::{OperatorRecord, OperatorRole, Policy, Store};
use super::*;

const CACHE: u64 = 8 << 20;

/// The secret file names and their names in the database, as the server has them.
const NAMES: [(&str, &str); 2] = [("admin.token", "admin_token"), ("enroll.key", "enroll_key")];

/// A data directory holding agents, queued, running and finished tasks with output, a job with
/// targets, a token, an operator and audit entries; and the largest id it handed out.
fn filled_dir() -> (Place, u64) {
    let place = Place::new(Engine::Sled);
    let store = place.open(Policy::default());
    fill(&store);
    create(&store, 3, 2, None);
    let operator = OperatorRecord {
        name: "ops".into(),
        role: OperatorRole::Operator,
        scope: BTreeMap::new(),
        token_hash: [7; 32],
        created_ms: 1,
        expires_ms: None,
        revoked_ms: None,
        ttl_secs: None,
        max_hosts: None,
        task_types: Vec::new(),
    };
    store.put_operator(&operator).expect("an operator");
    let last = store.fresh_id();
    (place, last)
}

/// Every tree of a data directory's store, without the id ceiling and the secrets (which a copy
/// sets on its own).
fn dump_of(dir: &Path) -> Dump {
    let store = Store::open(dir, CACHE, Policy::default()).expect("open the copy");
    let mut dump = store.dump();
    if let Some(meta) = dump.get_mut(b"meta".as_slice()) {
        meta.retain(|(key, _)| key.as_slice() != b"id_ceiling" && !key.starts_with(b"secret."));
    }
    dump
}

/// Files by name, with their bytes.
type Files = Vec<(String, Vec<u8>)>;

/// Copies with the secret files `files`, collecting the files written out.
fn run(
    source: &Source<'_>,
    destination: &Destination<'_>,
    files: Files,
) -> Result<(Copied, Files), StoreError> {
    let mut written = Vec::new();
    let mut on_file = |name: &str, bytes: &[u8]| {
        written.push((name.to_owned(), bytes.to_vec()));
        Ok(())
    };
    let copied = copy(source, destination, Secrets { names: &NAMES, files }, CACHE, &mut on_file)?;
    Ok((copied, written))
}

fn nonzero(copied: &Copied, tree: &str) -> bool {
    copied.trees.iter().any(|(name, count)| name == tree && *count > 0)
}

#[test]
fn a_data_directory_goes_to_postgresql_and_back_whole_and_ids_go_on_above() {
    let (source, last) = filled_dir();
    let before = dump_of(source.dir());
    let database = Place::new(Engine::Postgres);
    let target = database.target().expect("a database");
    let token = vec![("admin.token".to_owned(), b"the-token\n".to_vec())];
    let (there, _) = run(&Source::Dir(source.dir()), &Destination::Postgres(&target), token).expect("copy");
    for tree in ["agents", "tasks", "output", "jobs", "job_targets", "tokens", "operators", "audit"] {
        assert!(nonzero(&there, tree), "tree {tree} is empty in {there:?}");
    }
    assert_eq!(there.secrets, 1);

    let back = tempfile::tempdir().expect("a temp dir");
    let (_, files) =
        run(&Source::Postgres(&target), &Destination::Dir(back.path()), Vec::new()).expect("copy back");
    assert_eq!(
        files,
        [("admin.token".to_owned(), b"the-token\n".to_vec())],
        "the secret comes back as its file"
    );
    assert_eq!(dump_of(back.path()), before, "every tree is equal after the round trip");

    let on_postgres = database.open(Policy::default());
    assert!(on_postgres.fresh_id() > last, "ids on PostgreSQL go on above the source's");
    assert_eq!(
        on_postgres.shared_secret("admin_token", || unreachable!()).ok().as_deref(),
        Some("the-token")
    );
    let reopened = Store::open(back.path(), CACHE, Policy::default()).expect("open the copy");
    assert!(reopened.fresh_id() > last, "ids in the new data directory go on above the source's");
}

#[test]
fn a_backup_file_goes_to_postgresql_whole() {
    let (source, _) = filled_dir();
    let store = source.open(Policy::default());
    let mut bytes = Vec::new();
    let files = [("enroll.key".to_owned(), b"the-key\n".to_vec()), ("other".to_owned(), b"x".to_vec())];
    let summary = store.backup(&mut bytes, &files).expect("a backup");
    drop(store);
    let before = dump_of(source.dir());
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), &bytes).expect("write the backup");

    let database = Place::new(Engine::Postgres);
    let target = database.target().expect("a database");
    let (copied, _) =
        run(&Source::Backup(file.path()), &Destination::Postgres(&target), Vec::new()).expect("copy");
    assert_eq!((copied.secrets, copied.files_skipped), (1, 1), "{copied:?}");
    assert!(copied.id_floor >= summary.trailer.id_floor);

    let back = tempfile::tempdir().expect("a temp dir");
    run(&Source::Postgres(&target), &Destination::Dir(back.path()), Vec::new()).expect("copy back");
    let mut after = dump_of(back.path());
    let mut before = before;
    for dump in [&mut after, &mut before] {
        // The backup's own open of the source may have written the id ceiling, not compared.
        dump.remove(b"meta".as_slice());
    }
    assert_eq!(after, before, "every tree is equal");
}

#[test]
fn a_destination_holding_anything_is_refused_and_left_as_it_was() {
    let (source, _) = filled_dir();
    let database = Place::new(Engine::Postgres);
    let target = database.target().expect("a database");
    let store = database.open(Policy::default());
    store.put_agent(&super::super::tests::agent("there-before")).expect("an agent");
    drop(store);
    let err =
        run(&Source::Dir(source.dir()), &Destination::Postgres(&target), Vec::new()).expect_err("refused");
    assert!(err.to_string().contains("is not empty") && err.to_string().contains("copy again"), "{err}");
    let store = database.open(Policy::default());
    let agents: Vec<String> = store.agents().expect("agents").into_iter().map(|a| a.app_id).collect();
    assert_eq!(agents, ["there-before"], "nothing was copied in");

    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("x"), "x").expect("write");
    let err =
        run(&Source::Dir(source.dir()), &Destination::Dir(dir.path()), Vec::new()).expect_err("refused");
    assert!(err.to_string().contains("is not empty"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1, "nothing was written");
}

#[test]
fn a_server_refuses_a_database_a_copy_into_it_did_not_finish() {
    let database = Place::new(Engine::Postgres);
    let target = database.target().expect("a database");
    // What a copy cut short leaves: whatever it wrote, and its marker.
    let kv = PgKv::open(&target).expect("the database");
    write_pg(&kv, "meta", &Batch::from([(COPY_MARKER.to_vec(), Some(b"x".to_vec()))])).expect("a marker");
    drop(kv);
    let err = database.try_open(Policy::default()).err().expect("refused");
    assert!(err.to_string().contains("holds a copy that did not finish"), "{err}");
    let out = tempfile::tempdir().expect("a temp dir");
    let err =
        run(&Source::Postgres(&target), &Destination::Dir(out.path()), Vec::new()).expect_err("refused");
    assert!(err.to_string().contains("holds a copy that did not finish"), "as a source too: {err}");

    // A copy that finished leaves none.
    let (source, _) = filled_dir();
    let finished = Place::new(Engine::Postgres);
    let target = finished.target().expect("a database");
    run(&Source::Dir(source.dir()), &Destination::Postgres(&target), Vec::new()).expect("copy");
    let store = finished.try_open(Policy::default()).expect("the copy opens");
    assert!(store.trees().meta.get(COPY_MARKER).expect("read meta").is_none());
}

#[test]
fn a_database_source_of_an_older_schema_is_refused_and_not_migrated() {
    let (source, _) = filled_dir();
    let database = Place::new(Engine::Postgres);
    let target = database.target().expect("a database");
    run(&Source::Dir(source.dir()), &Destination::Postgres(&target), Vec::new()).expect("copy");
    // Back to the first schema version, as an older release left it.
    let mut client = target.connect().expect("a connection");
    client
        .batch_execute("DROP TABLE orange_failure_counts; DELETE FROM orange_schema WHERE version > 1")
        .expect("the older schema");
    let back = tempfile::tempdir().expect("a temp dir");
    let err =
        run(&Source::Postgres(&target), &Destination::Dir(back.path()), Vec::new()).expect_err("refused");
    assert!(err.to_string().contains("has schema version 1, older than this orange's"), "{err}");
    let version: i32 =
        client.query_one("SELECT max(version) FROM orange_schema", &[]).expect("the version").get(0);
    assert_eq!(version, 1, "the source was not migrated");
}
