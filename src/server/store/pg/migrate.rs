//! The PostgreSQL schema's versions: the SQL of each is compiled in, applied in order at start
//! in one transaction under a transaction-level advisory lock (so that servers starting
//! together migrate once, also through a pooler such as PgBouncer that may hand each
//! transaction to another connection), together with the rows in `orange_schema` that record
//! them.

use postgres::{Client, GenericClient, Transaction};

use super::super::StoreError;
use super::pg_error;

/// Each schema version and its SQL, oldest first.
const MIGRATIONS: &[(i32, &str)] =
    &[(1, include_str!("001_trees.sql")), (2, include_str!("002_failure_counts.sql"))];

/// The advisory lock held while migrating ("orange" and 2).
const MIGRATE_LOCK: i64 = 0x6f72_616e_6765_0002;

/// The oldest PostgreSQL release orange runs on (`server_version_num`).
const OLDEST_SERVER: i32 = 120_000;

/// The newest schema version this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _)| *version)
}

/// Checks the server's release, then brings the schema to [`latest`].
pub fn run(client: &mut Client, shown: &str) -> Result<(), StoreError> {
    let release: String = client.query_one("SHOW server_version_num", &[]).map_err(to_store)?.get(0);
    let release: i32 = release.trim().parse().unwrap_or(0);
    if release < OLDEST_SERVER {
        return Err(StoreError::Io(format!(
            "the database {shown} runs PostgreSQL {} (server_version_num {release}); orange needs 12 or newer",
            release / 10_000
        )));
    }
    // READ COMMITTED whatever the database's default: each statement after the lock then sees
    // what a server that held it before committed.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::ReadCommitted)
        .start()
        .map_err(to_store)?;
    // Held until the transaction ends: a second server waits here, then finds the work done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK]).map_err(to_store)?;
    apply(&mut tx, shown)?;
    tx.commit().map_err(to_store)
}

/// Checks, without writing, that the database is at this build's schema version: what a copy
/// reads from must not be migrated by the copy.
pub fn check(client: &mut Client, shown: &str) -> Result<(), StoreError> {
    let exists: bool =
        client.query_one("SELECT to_regclass('orange_schema') IS NOT NULL", &[]).map_err(to_store)?.get(0);
    let version: i32 = if exists {
        client.query_one("SELECT coalesce(max(version), 0) FROM orange_schema", &[]).map_err(to_store)?.get(0)
    } else {
        0
    };
    match version {
        v if v == latest() => Ok(()),
        0 => Err(StoreError::Io(format!("the database {shown} holds no orange fleet (no schema)"))),
        v if v < latest() => Err(StoreError::Io(format!(
            "the database {shown} has schema version {v}, older than this orange's ({}): start this \
             release's `orange server --store` on it once (it migrates the schema), then copy",
            latest()
        ))),
        v => Err(StoreError::Io(format!(
            "the database {shown} has schema version {v}, newer than this orange knows ({}): copy \
             with the newer orange",
            latest()
        ))),
    }
}

/// The schema version the database is at (0: none yet).
fn current(client: &mut impl GenericClient) -> Result<i32, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS orange_schema \
             (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(to_store)?;
    let row =
        client.query_one("SELECT coalesce(max(version), 0) FROM orange_schema", &[]).map_err(to_store)?;
    Ok(row.get(0))
}

fn apply(tx: &mut Transaction<'_>, shown: &str) -> Result<(), StoreError> {
    let current = current(tx)?;
    if current > latest() {
        return Err(StoreError::Io(format!(
            "the database {shown} has schema version {current}, newer than this orange knows ({}): \
             run the newer orange, or restore a backup made before the upgrade",
            latest()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
        tx.batch_execute(sql).map_err(to_store)?;
        tx.execute("INSERT INTO orange_schema (version) VALUES ($1)", &[version]).map_err(to_store)?;
        tracing::info!(version, database = shown, "database schema migrated");
    }
    Ok(())
}

fn to_store(e: postgres::Error) -> StoreError {
    StoreError::Sled(pg_error(e))
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;
    use crate::server::store::trees::Trees;

    /// Every tree the store declares has its table in the migrations, and no table is left
    /// over: a tree added to `trees!` without a migration fails here, not on a live database.
    #[test]
    fn the_migrations_create_one_table_per_tree_of_the_store() {
        let sql: String = MIGRATIONS.iter().map(|(_, sql)| *sql).collect();
        let tables: Vec<&str> = sql
            .lines()
            .filter_map(|line| line.strip_prefix("CREATE TABLE orange_"))
            .filter_map(|rest| rest.split_once(' ').map(|(name, _)| name))
            .collect();
        let mut wanted: Vec<&str> = Trees::NAMES.to_vec();
        let mut created = tables.clone();
        wanted.sort_unstable();
        created.sort_unstable();
        assert_eq!(created, wanted, "tables created by the migrations, against the store's trees");
    }
}
