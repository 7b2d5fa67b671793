//! Where the servers a scenario starts keep the fleet: their data directories (sled, the
//! default), or one PostgreSQL database given with `--store URL`, which the bench empties of
//! everything orange made there before the run, so that the first server migrates afresh.

use anyhow::{Context, Result, bail};

/// The environment variable the servers (and the bench's own connection) read the database
/// password from; the URL never carries it.
const PASSWORD_VAR: &str = "ORANGE_STORE_PASSWORD";

/// How the report names the store: sled, or the PostgreSQL URL (which holds no password: the
/// server refuses one there).
pub fn describe(store: Option<&str>) -> String {
    match store {
        Some(url) => format!("PostgreSQL {url}"),
        None => "sled (each server's data directory)".to_owned(),
    }
}

/// Drops every `orange_*` table and sequence (`orange_schema` among them) of the database
/// `url` names, in its current schema; the names dropped. The database itself must exist. Runs
/// the synchronous client, so it is called before the bench's runtime starts.
pub fn reset(url: &str) -> Result<Vec<String>> {
    let target = orange::server::config::store_target(url, std::env::var(PASSWORD_VAR).ok())?;
    let mut client = target.config.connect(postgres::NoTls).with_context(|| {
        format!("cannot connect to {url} (create the database first; the password from {PASSWORD_VAR})")
    })?;
    let rows = client
        .query(
            "SELECT c.relname, c.relkind = 'S' FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'S') \
             AND c.relname LIKE 'orange\\_%' ORDER BY c.relkind, c.relname",
            &[],
        )
        .with_context(|| format!("cannot list the tables of {url}"))?;
    let mut dropped = Vec::with_capacity(rows.len());
    for row in rows {
        let (name, sequence): (String, bool) = (row.get(0), row.get(1));
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            bail!("{url} holds {name:?}, not a name orange makes; drop it by hand");
        }
        let kind = if sequence { "SEQUENCE" } else { "TABLE" };
        // CASCADE: a table may own a sequence, which then goes with it (hence IF EXISTS).
        client
            .batch_execute(&format!("DROP {kind} IF EXISTS {name} CASCADE"))
            .with_context(|| format!("cannot drop {name} in {url}"))?;
        dropped.push(name);
    }
    Ok(dropped)
}
