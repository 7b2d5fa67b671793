//! The PostgreSQL engine under the store's trees: each tree is a table of keys and values
//! (`001_trees.sql`), so the store's rules — written once over trees in `tasks.rs`, `jobs.rs`,
//! `sweep.rs` and the rest — run unchanged on either engine.
//!
//! Invariants:
//! - Every write transaction runs `SERIALIZABLE`:
//!   whatever runs at once, on this server or another, the database commits only what some
//!   order of one-at-a-time transactions would have produced, as the embedded store does with
//!   its single writer, so a rule that reads then writes sees no other write in between. A
//!   transaction the database refuses as conflicting (`40001`, `40P01`) runs again from the
//!   start, after a short random pause ([`PgKv::transaction`]); the store's rules are written
//!   to run again (what they announce is kept only from the attempt that commits).
//! - A write outside a transaction (`write_one`, `compare_and_swap`, `pop_min`) touches one key
//!   under its row lock, atomic on its own: it fits between any two transactions, so it needs
//!   no serializable transaction, and is never refused as conflicting.
//! - Claims skip what another transaction holds: the next queued task of an agent and a due
//!   deadline are taken with `FOR UPDATE SKIP LOCKED` (`TxRead::claim_first` and
//!   `TxRead::claim` of [`PgTxn`]), so two servers answering one agent hand out two different tasks, and
//!   two servers sweeping at once pass each deadline once, without waiting for each other.
//! - A transaction's reads see its own writes (the overlay in `logged.rs`); its writes reach the
//!   tables in one batch per tree just before the commit. The commit returns once PostgreSQL
//!   has made it durable (`synchronous_commit` on, forced for these connections), so a write
//!   is on stable storage when the store's call returns. Reads outside a transaction see what
//!   was committed.
//! - Ids and queue numbers come from one sequence, taken inside the transaction that uses
//!   them.
//! - Writers and readers have pools of their own: writers queue for a connection of the
//!   writers' pool, and reads always find one.
//!
//! The driver is the synchronous `postgres` crate (a `tokio-postgres` client driven by its own
//! small runtime) in an `r2d2` pool, both by the same maintainers: the store's calls are
//! synchronous, and a call made on a server's async worker thread hands that thread's other
//! work to the other workers while it waits ([`blocking`]).

mod migrate;
mod scan;
pub mod tls;

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::Type;
use r2d2_postgres::PostgresConnectionManager;
use sled::IVec;

pub use scan::Scan;
pub use tls::Tls;

use super::StoreError;
use super::logged::TxRead;

/// Connections a server keeps at most for reads outside transactions, and as many for write
/// transactions.
const POOL_SIZE: u32 = 8;

/// Most times one write transaction runs before its caller is told the database kept refusing
/// it as conflicting.
const MAX_ATTEMPTS: u32 = 200;

/// The longest pause, in milliseconds, before a refused transaction runs again.
const MAX_BACKOFF_MS: u64 = 20;

/// How long a store call waits for a free connection, or for a new one to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections to the database.
type Pool = r2d2::Pool<PostgresConnectionManager<Tls>>;

/// One connection of a [`Pool`].
type Connection = r2d2::PooledConnection<PostgresConnectionManager<Tls>>;

/// A pool of connections to `target`.
fn pool(target: &PgTarget) -> Result<Pool, StoreError> {
    let manager = PostgresConnectionManager::new(target.config.clone(), target.tls.clone());
    r2d2::Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(1))
        // No round trip to test each connection handed out: a broken one fails its
        // statement, and the pool drops it when it comes back closed.
        .test_on_check_out(false)
        .connection_timeout(CONNECT_TIMEOUT)
        .build(manager)
        .map_err(|e| StoreError::Io(format!("cannot connect to the database {}: {e}", target.shown)))
}

/// Where the database is: the connection settings, and the URL to show in messages (never
/// with a password).
#[derive(Clone)]
pub struct PgTarget {
    /// What the driver connects with.
    pub config: postgres::Config,
    /// The URL as given, password left out.
    pub shown: String,
    /// What every connection is made with: TLS as the URL's `sslmode` and `sslrootcert` say.
    pub tls: Tls,
}

impl PgTarget {
    /// One connection of its own (outside the pool).
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }
}

/// The open database: a pool of connections and the schema brought up to date.
pub struct PgKv {
    /// Connections for reads outside transactions; `None` only while it is dropped.
    reads: Option<Pool>,
    /// Connections for write transactions; `None` only while it is dropped.
    writes: Option<Pool>,
    shown: String,
}

impl Drop for PgKv {
    /// Closes the connections through [`blocking`]: a client closes its connection on its own
    /// runtime, which may not run on an async runtime's worker thread.
    fn drop(&mut self) {
        let pools = (self.reads.take(), self.writes.take());
        blocking(move || drop(pools));
    }
}

impl PgKv {
    /// Connects to `target`, checks its release and applies the schema's migrations.
    pub fn open(target: &PgTarget) -> Result<PgKv, StoreError> {
        PgKv::open_with(target, migrate::run)
    }

    /// Connects to `target` to read it as it is: its schema must be this build's, and is not
    /// migrated (a copy's source).
    pub fn open_as_is(target: &PgTarget) -> Result<PgKv, StoreError> {
        PgKv::open_with(target, migrate::check)
    }

    /// Connects to `target`, runs `prepare` (the schema's migrations or check) on a first
    /// connection, then opens the pools.
    fn open_with(
        target: &PgTarget,
        prepare: fn(&mut postgres::Client, &str) -> Result<(), StoreError>,
    ) -> Result<PgKv, StoreError> {
        blocking(|| {
            // One connection of our own first: its failure says why (refused, bad password,
            // no such database), where the pool's would only say that it timed out.
            let mut first = target.connect().map_err(|e| {
                StoreError::Io(format!("cannot connect to the database {}: {}", target.shown, described(&e)))
            })?;
            prepare(&mut first, &target.shown)?;
            drop(first);
            Ok(PgKv { reads: Some(pool(target)?), writes: Some(pool(target)?), shown: target.shown.clone() })
        })
    }

    /// The database's URL, without a password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A connection for reads; call and drop it inside [`blocking`].
    fn client(&self) -> sled::Result<Connection> {
        // The pools are taken only by `drop`.
        self.connection(self.reads.as_ref().expect("the pools of a database not yet dropped"))
    }

    /// A connection for a write transaction; call and drop it inside [`blocking`].
    fn writer(&self) -> sled::Result<Connection> {
        // The pools are taken only by `drop`.
        self.connection(self.writes.as_ref().expect("the pools of a database not yet dropped"))
    }

    fn connection(&self, pool: &Pool) -> sled::Result<Connection> {
        pool.get().map_err(|e| io_error(format!("no connection to the database {}: {e}", self.shown)))
    }

    /// The value at `key` in `tree`.
    pub fn get(&self, tree: &str, key: &[u8]) -> sled::Result<Option<IVec>> {
        blocking(|| get_with(&mut *self.client()?, tree, key, false).map_err(pg_error))
    }

    /// The number of entries in `tree`.
    pub fn len(&self, tree: &str) -> sled::Result<usize> {
        blocking(|| {
            let row = self
                .client()?
                .query_one(&format!("SELECT count(*) FROM orange_{tree}"), &[])
                .map_err(pg_error)?;
            Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }

    /// The entries of `tree` between `lower` and `upper`, read a page at a time.
    pub fn scan(
        kv: &Arc<PgKv>,
        tree: &'static str,
        lower: std::ops::Bound<Vec<u8>>,
        upper: std::ops::Bound<Vec<u8>>,
    ) -> Scan {
        Scan::new(Arc::clone(kv), tree, lower, upper)
    }

    /// Writes `value` (or removes, for `None`) at `key` of `tree`; returns the value before.
    /// One statement on one key, atomic on its own (a row lock, no serializable transaction:
    /// such a write is never refused as conflicting, and two writers of one new key learn
    /// which came first).
    pub fn write_one(&self, tree: &str, key: &[u8], value: Option<&[u8]>) -> sled::Result<Option<IVec>> {
        blocking(|| {
            let mut client = self.writer()?;
            let Some(value) = value else {
                let sql = format!("DELETE FROM orange_{tree} WHERE key = $1 RETURNING value");
                let row = client.query_typed_opt(&sql, &[(&key, Type::BYTEA)]).map_err(pg_error)?;
                return Ok(row.map(|row| bytes(&row, 0)));
            };
            // `old` is read (and its row locked) first, as the outer SELECT asks for it first;
            // `up` writes after it. A row another writer inserted after that read shows as an
            // update with no old value: the next round reads it.
            let sql = format!(
                "WITH old AS (SELECT value FROM orange_{tree} WHERE key = $1 FOR UPDATE), \
                 up AS (INSERT INTO orange_{tree} (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value RETURNING xmax = 0 AS inserted) \
                 SELECT (SELECT value FROM old), (SELECT inserted FROM up)"
            );
            for _ in 0..MAX_ATTEMPTS {
                let row = client
                    .query_typed_one(&sql, &[(&key, Type::BYTEA), (&value, Type::BYTEA)])
                    .map_err(pg_error)?;
                let (old, inserted): (Option<&[u8]>, bool) = (row.get(0), row.get(1));
                if old.is_some() || inserted {
                    return Ok(old.map(IVec::from));
                }
            }
            Err(io_error(format!(
                "the database {} kept changing key {key:?} of {tree} under a write; try again",
                self.shown
            )))
        })
    }

    /// Swaps the value at `key` of `tree` from `old` to `new` if it is `old`: one key under
    /// its row lock, atomic on its own as [`Self::write_one`].
    pub fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<IVec>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>> {
        blocking(|| {
            let mut client = self.writer()?;
            let mut tx = client.transaction().map_err(pg_error)?;
            let current = get_with(&mut tx, tree, key, true).map_err(pg_error)?;
            if current.as_deref() != old {
                return Ok(Err(sled::CompareAndSwapError { current, proposed: new }));
            }
            let changed = match (&current, &new) {
                (_, None) => {
                    let sql = format!("DELETE FROM orange_{tree} WHERE key = $1");
                    tx.execute_typed(&sql, &[(&key, Type::BYTEA)]).map_err(pg_error)?
                        == u64::from(current.is_some())
                }
                (Some(_), Some(new)) => {
                    let sql = format!("UPDATE orange_{tree} SET value = $2 WHERE key = $1");
                    tx.execute_typed(&sql, &[(&key, Type::BYTEA), (&new.as_ref(), Type::BYTEA)])
                        .map_err(pg_error)?
                        == 1
                }
                (None, Some(new)) => {
                    let sql = format!(
                        "INSERT INTO orange_{tree} (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                    );
                    tx.execute_typed(&sql, &[(&key, Type::BYTEA), (&new.as_ref(), Type::BYTEA)])
                        .map_err(pg_error)?
                        == 1
                }
            };
            if !changed {
                // Another writer put the key there between the read and the insert.
                let current = get_with(&mut tx, tree, key, true).map_err(pg_error)?;
                return Ok(Err(sled::CompareAndSwapError { current, proposed: new }));
            }
            tx.commit().map_err(pg_error)?;
            Ok(Ok(()))
        })
    }

    /// Removes and returns the first entry of `tree` that no other writer holds: one
    /// statement (`FOR UPDATE SKIP LOCKED`).
    pub fn pop_min(&self, tree: &str) -> sled::Result<Option<(IVec, IVec)>> {
        blocking(|| {
            let sql = format!(
                "DELETE FROM orange_{tree} WHERE key = \
                 (SELECT key FROM orange_{tree} ORDER BY key LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key, value"
            );
            let row = self.writer()?.query_typed_opt(&sql, &[]).map_err(pg_error)?;
            Ok(row.as_ref().map(entry))
        })
    }

    /// Runs `f` in one `SERIALIZABLE` transaction and commits it if `f` succeeds. When the
    /// database refuses it as conflicting with another (at a statement or at the commit), it
    /// runs `f` again in a new transaction after a short random pause, so `f` must be safe to
    /// run more than once. A transaction that fails without writing still commits, so that
    /// the database confirms what `f` read to decide (a refusal read from a view another
    /// transaction made stale runs again instead).
    pub fn transaction<R, X: From<sled::Error>>(
        &self,
        f: impl Fn(&PgTxn<'_>) -> Result<R, X>,
    ) -> Result<R, X> {
        blocking(|| {
            let mut client = self.writer()?;
            for attempt in 0..MAX_ATTEMPTS {
                if let Some(done) = Self::attempt(&mut client, &f) {
                    return done;
                }
                std::thread::sleep(backoff(attempt));
            }
            Err(io_error(format!(
                "the database {} refused a write {MAX_ATTEMPTS} times as conflicting with others; try again",
                self.shown
            ))
            .into())
        })
    }

    /// One attempt of [`Self::transaction`]; `None` when the database refused it as conflicting.
    fn attempt<R, X: From<sled::Error>>(
        client: &mut postgres::Client,
        f: &impl Fn(&PgTxn<'_>) -> Result<R, X>,
    ) -> Option<Result<R, X>> {
        let started =
            client.build_transaction().isolation_level(postgres::IsolationLevel::Serializable).start();
        let tx = match started {
            Ok(tx) => tx,
            Err(e) => return Some(Err(pg_error(e).into())),
        };
        let txn = PgTxn { tx: RefCell::new(tx), conflicted: Cell::new(false), wrote: Cell::new(false) };
        let result = f(&txn);
        if txn.conflicted.get() {
            return None; // the transaction is rolled back as it is dropped
        }
        if result.is_err() && txn.wrote.get() {
            return Some(result);
        }
        match txn.tx.into_inner().commit() {
            Ok(()) => Some(result),
            Err(e) if is_conflict(&e) => None,
            Err(e) => Some(result.and(Err(pg_error(e).into()))),
        }
    }

    /// The database's size on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        blocking(|| {
            let row = self
                .client()?
                .query_one("SELECT pg_database_size(current_database())", &[])
                .map_err(pg_error)?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }

    /// Makes the ids' sequence hand out only numbers above `floor` from now on (never lowers
    /// it): a copied fleet's ids go on above the source's.
    pub fn raise_ids(&self, floor: u64) -> Result<(), StoreError> {
        let floor = i64::try_from(floor).unwrap_or(i64::MAX);
        blocking(|| {
            self.client()?
                .execute(
                    "SELECT setval('orange_ids', greatest($1, (SELECT last_value FROM orange_ids)))",
                    &[&floor],
                )
                .map_err(pg_error)?;
            Ok(())
        })
    }

    /// `count` new numbers from the ids' sequence, in increasing order.
    pub fn next_ids(&self, count: usize) -> Result<Vec<u64>, StoreError> {
        blocking(|| {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            let rows = self
                .client()?
                .query("SELECT nextval('orange_ids') FROM generate_series(1, $1::bigint)", &[&count])
                .map_err(pg_error)?;
            let mut ids: Vec<u64> = rows.iter().map(|row| row.get::<_, i64>(0).max(0) as u64).collect();
            ids.sort_unstable();
            Ok(ids)
        })
    }
}

/// One write transaction.
pub struct PgTxn<'c> {
    tx: RefCell<postgres::Transaction<'c>>,
    /// A statement was refused as conflicting with another transaction: run it all again.
    conflicted: Cell<bool>,
    /// A statement that writes was sent.
    wrote: Cell<bool>,
}

impl PgTxn<'_> {
    /// Writes (or, for `None`, removes) each key of `tree`: one statement for the removals,
    /// one for the writes. Statements on the hot path are sent typed (`*_typed`): one round
    /// trip each, where an unprepared statement takes three (prepare, execute, close).
    pub fn write(
        &self,
        tree: &str,
        writes: impl IntoIterator<Item = (Vec<u8>, Option<IVec>)>,
    ) -> sled::Result<()> {
        let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for (key, value) in writes {
            match value {
                Some(value) => {
                    keys.push(key);
                    values.push(value.to_vec());
                }
                None => gone.push(key),
            }
        }
        let mut tx = self.tx.borrow_mut();
        if !gone.is_empty() {
            self.wrote.set(true);
            let sql = format!("DELETE FROM orange_{tree} WHERE key = ANY($1)");
            self.checked(tx.execute_typed(&sql, &[(&gone, Type::BYTEA_ARRAY)]))?;
        }
        if !keys.is_empty() {
            self.wrote.set(true);
            let sql = format!(
                "INSERT INTO orange_{tree} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            );
            self.checked(
                tx.execute_typed(&sql, &[(&keys, Type::BYTEA_ARRAY), (&values, Type::BYTEA_ARRAY)]),
            )?;
        }
        Ok(())
    }

    /// A statement's result, its error in the trees' vocabulary; a refusal as conflicting
    /// marks the transaction to run again.
    fn checked<T>(&self, result: Result<T, postgres::Error>) -> sled::Result<T> {
        result.map_err(|e| {
            if is_conflict(&e) {
                self.conflicted.set(true);
            }
            pg_error(e)
        })
    }
}

/// Whether the database refused a transaction because of another one: it may succeed if run
/// again.
fn is_conflict(e: &postgres::Error) -> bool {
    matches!(e.code(), Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED)
}

/// A random pause before attempt `attempt + 1` of a refused transaction, longer as attempts
/// add up, so that transactions that keep meeting spread out.
fn backoff(attempt: u32) -> Duration {
    let mut bytes = [0u8; 8];
    // Without randomness at hand (never on Linux), the longest pause still spreads attempts.
    let random = getrandom::fill(&mut bytes).map(|()| u64::from_le_bytes(bytes)).unwrap_or(u64::MAX);
    let ceiling_us = (MAX_BACKOFF_MS * 1000).min(100u64 << attempt.min(16));
    Duration::from_micros(random % (ceiling_us + 1))
}

impl TxRead for PgTxn<'_> {
    fn get(&self, tree: &str, key: &[u8]) -> sled::Result<Option<IVec>> {
        self.checked(get_with(&mut *self.tx.borrow_mut(), tree, key, false))
    }

    fn next_ids(&self, count: usize) -> Option<sled::Result<Vec<u64>>> {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let sql = "SELECT nextval('orange_ids') FROM generate_series(1, $1)";
        let rows = self.checked(self.tx.borrow_mut().query_typed(sql, &[(&count, Type::INT8)]));
        Some(rows.map(|rows| {
            let mut ids: Vec<u64> = rows.iter().map(|row| row.get::<_, i64>(0).max(0) as u64).collect();
            ids.sort_unstable();
            ids
        }))
    }

    /// One `= ANY` statement for all the keys.
    fn contains_each(&self, tree: &str, keys: &[&[u8]]) -> sled::Result<Vec<bool>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT key FROM orange_{tree} WHERE key = ANY($1)");
        let rows = self.checked(self.tx.borrow_mut().query_typed(&sql, &[(&keys, Type::BYTEA_ARRAY)]))?;
        let found: std::collections::HashSet<Vec<u8>> =
            rows.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect();
        Ok(keys.iter().map(|key| found.contains(*key)).collect())
    }

    /// `FOR UPDATE SKIP LOCKED`.
    fn claim_first(&self, tree: &str, from: &[u8], to: Option<&[u8]>) -> sled::Result<Option<(IVec, IVec)>> {
        let sql = format!(
            "SELECT key, value FROM orange_{tree} WHERE key >= $1 AND ($2::bytea IS NULL OR key < $2) \
             ORDER BY key LIMIT 1 FOR UPDATE SKIP LOCKED"
        );
        let row = self.tx.borrow_mut().query_typed_opt(&sql, &[(&from, Type::BYTEA), (&to, Type::BYTEA)]);
        Ok(self.checked(row)?.as_ref().map(entry))
    }

    /// `FOR UPDATE SKIP LOCKED`.
    fn claim(&self, tree: &str, key: &[u8]) -> sled::Result<bool> {
        let sql = format!("SELECT 1 FROM orange_{tree} WHERE key = $1 FOR UPDATE SKIP LOCKED");
        let row = self.checked(self.tx.borrow_mut().query_typed_opt(&sql, &[(&key, Type::BYTEA)]))?;
        Ok(row.is_some())
    }
}

/// The value at `key` of `tree`, read through `client` (a connection or a transaction);
/// `FOR UPDATE` with `lock`.
fn get_with(
    client: &mut impl postgres::GenericClient,
    tree: &str,
    key: &[u8],
    lock: bool,
) -> Result<Option<IVec>, postgres::Error> {
    let sql =
        format!("SELECT value FROM orange_{tree} WHERE key = $1{}", if lock { " FOR UPDATE" } else { "" });
    Ok(client.query_typed_opt(&sql, &[(&key, Type::BYTEA)])?.map(|row| bytes(&row, 0)))
}

/// Column `index` of `row`, a `bytea`.
fn bytes(row: &postgres::Row, index: usize) -> IVec {
    IVec::from(row.get::<_, &[u8]>(index))
}

/// A row of `key, value`.
fn entry(row: &postgres::Row) -> (IVec, IVec) {
    (bytes(row, 0), bytes(row, 1))
}

/// Runs `f`, which waits on the database. On a worker thread of the server's runtime, the
/// thread's other tasks move to the other workers meanwhile (and the driver's own runtime may
/// run there); elsewhere `f` just runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A driver error in the trees' error vocabulary.
pub fn pg_error(e: postgres::Error) -> sled::Error {
    io_error(format!("PostgreSQL: {}", described(&e)))
}

/// A driver error with its causes: its own text is only the kind ("db error", "error
/// performing TLS handshake"), what the server said or which certificate check failed is in
/// its sources.
pub fn described(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.ends_with(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

fn io_error(message: String) -> sled::Error {
    sled::Error::Io(std::io::Error::other(message))
}
