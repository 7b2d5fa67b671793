//! The PostgreSQL engine under the store's trees: each tree is a table of keys and values
//! (`001_trees.sql`), so the store's rules — written once over trees in `tasks.rs`, `jobs.rs`,
//! `sweep.rs` and the rest — run unchanged on either engine.
//!
//! Invariants:
//! - Every write, in a transaction or alone, runs in a PostgreSQL transaction holding one
//!   advisory lock ([`WRITE_LOCK`]): writes run one at a time across every server on the
//!   database, as they do in one embedded store under its log's write lock, so a rule that
//!   reads then writes sees no other write in between. Reads outside a transaction take no lock
//!   and see what was committed.
//! - A transaction's reads see its own writes (the overlay in `logged.rs`); its writes reach the
//!   tables in one batch per tree just before the commit. The commit returns once PostgreSQL
//!   has made it durable (`synchronous_commit` on, its default), so a write is on stable storage
//!   when the store's call returns.
//! - Ids and queue numbers come from one sequence, taken while the write lock is held, so an
//!   agent's queue keeps the order of enqueues across servers.
//!
//! The driver is the synchronous `postgres` crate (a `tokio-postgres` client driven by its own
//! small runtime) in an `r2d2` pool, both by the same maintainers: the store's calls are
//! synchronous, and a call made on a server's async worker thread hands that thread's other
//! work to the other workers while it waits ([`blocking`]).

mod migrate;
mod scan;
pub mod tls;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use postgres::types::Type;
use r2d2_postgres::PostgresConnectionManager;
use sled::IVec;

pub use scan::Scan;
pub use tls::Tls;

use super::StoreError;
use super::logged::TxRead;

/// The advisory lock every write holds ("orange" and 1).
const WRITE_LOCK: i64 = 0x6f72_616e_6765_0001;

/// Connections a server keeps to the database at most.
const POOL_SIZE: u32 = 16;

/// How long a store call waits for a free connection, or for a new one to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections to the database.
type Pool = r2d2::Pool<PostgresConnectionManager<Tls>>;

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
    /// `None` only while it is dropped.
    pool: Option<Pool>,
    shown: String,
    /// Held by this process's write transaction while it waits for, then holds, the write lock:
    /// one connection per server waits on the database's lock, the others stay free for reads
    /// (a pool full of waiting writers would starve the writer holding the lock).
    writing: std::sync::Mutex<()>,
}

impl Drop for PgKv {
    /// Closes the connections through [`blocking`]: a client closes its connection on its own
    /// runtime, which may not run on an async runtime's worker thread.
    fn drop(&mut self) {
        let pool = self.pool.take();
        blocking(move || drop(pool));
    }
}

impl PgKv {
    /// Connects to `target`, checks its release and applies the schema's migrations.
    pub fn open(target: &PgTarget) -> Result<PgKv, StoreError> {
        blocking(|| {
            // One connection of our own first: its failure says why (refused, bad password,
            // no such database), where the pool's would only say that it timed out.
            let mut first = target.connect().map_err(|e| {
                StoreError::Io(format!("cannot connect to the database {}: {}", target.shown, described(&e)))
            })?;
            migrate::run(&mut first, &target.shown)?;
            drop(first);
            let manager = PostgresConnectionManager::new(target.config.clone(), target.tls.clone());
            let pool = r2d2::Pool::builder()
                .max_size(POOL_SIZE)
                .min_idle(Some(1))
                // No round trip to test each connection handed out: a broken one fails its
                // statement, and the pool drops it when it comes back closed.
                .test_on_check_out(false)
                .connection_timeout(CONNECT_TIMEOUT)
                .build(manager)
                .map_err(|e| {
                    StoreError::Io(format!("cannot connect to the database {}: {e}", target.shown))
                })?;
            Ok(PgKv { pool: Some(pool), shown: target.shown.clone(), writing: std::sync::Mutex::new(()) })
        })
    }

    /// The database's URL, without a password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A connection from the pool; call and drop it inside [`blocking`].
    fn client(&self) -> sled::Result<r2d2::PooledConnection<PostgresConnectionManager<Tls>>> {
        // The pool is taken only by `drop`.
        let pool = self.pool.as_ref().expect("the pool of a database not yet dropped");
        pool.get().map_err(|e| io_error(format!("no connection to the database {}: {e}", self.shown)))
    }

    /// The value at `key` in `tree`.
    pub fn get(&self, tree: &str, key: &[u8]) -> sled::Result<Option<IVec>> {
        blocking(|| get_with(&mut *self.client()?, tree, key))
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

    /// Writes `value` (or removes, for `None`) at `key` of `tree`, under the write lock; returns
    /// the value before.
    pub fn write_one(&self, tree: &str, key: &[u8], value: Option<&[u8]>) -> sled::Result<Option<IVec>> {
        self.transaction(|txn| {
            let old = txn.get(tree, key)?;
            txn.write(tree, [(key.to_vec(), value.map(IVec::from))])?;
            Ok(old)
        })
    }

    /// Swaps the value at `key` of `tree` from `old` to `new` if it is `old`, under the write
    /// lock.
    pub fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<IVec>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>> {
        self.transaction(|txn| {
            let current = txn.get(tree, key)?;
            if current.as_deref() != old {
                return Ok(Err(sled::CompareAndSwapError { current, proposed: new }));
            }
            txn.write(tree, [(key.to_vec(), new)])?;
            Ok(Ok(()))
        })
    }

    /// Removes and returns the first entry of `tree`, under the write lock.
    pub fn pop_min(&self, tree: &str) -> sled::Result<Option<(IVec, IVec)>> {
        self.transaction(|txn| {
            let sql = format!("SELECT key, value FROM orange_{tree} ORDER BY key LIMIT 1");
            let Some(row) = txn.tx.borrow_mut().query_typed_opt(&sql, &[]).map_err(pg_error)? else {
                return Ok(None);
            };
            let (key, value): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
            txn.write(tree, [(key.clone(), None)])?;
            Ok(Some((IVec::from(key), IVec::from(value))))
        })
    }

    /// Runs `f` in one transaction holding the write lock; commits if it succeeds.
    pub fn transaction<R, X: From<sled::Error>>(
        &self,
        f: impl FnOnce(&PgTxn<'_>) -> Result<R, X>,
    ) -> Result<R, X> {
        blocking(|| {
            let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            let mut client = self.client()?;
            // READ COMMITTED whatever the database's default: each statement sees what the
            // writer before us committed (a snapshot taken before the lock would not).
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::ReadCommitted)
                .start()
                .map_err(pg_error)?;
            tx.execute_typed("SELECT pg_advisory_xact_lock($1)", &[(&WRITE_LOCK, Type::INT8)])
                .map_err(pg_error)?;
            let txn = PgTxn { tx: RefCell::new(tx) };
            let result = f(&txn)?;
            txn.tx.into_inner().commit().map_err(pg_error)?;
            Ok(result)
        })
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

/// One write transaction, holding the write lock.
pub struct PgTxn<'c> {
    tx: RefCell<postgres::Transaction<'c>>,
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
            let sql = format!("DELETE FROM orange_{tree} WHERE key = ANY($1)");
            tx.execute_typed(&sql, &[(&gone, Type::BYTEA_ARRAY)]).map_err(pg_error)?;
        }
        if !keys.is_empty() {
            let sql = format!(
                "INSERT INTO orange_{tree} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            );
            tx.execute_typed(&sql, &[(&keys, Type::BYTEA_ARRAY), (&values, Type::BYTEA_ARRAY)])
                .map_err(pg_error)?;
        }
        Ok(())
    }
}

impl TxRead for PgTxn<'_> {
    fn get(&self, tree: &str, key: &[u8]) -> sled::Result<Option<IVec>> {
        get_with(&mut *self.tx.borrow_mut(), tree, key)
    }

    fn next_id(&self) -> Option<sled::Result<u64>> {
        let row = self.tx.borrow_mut().query_typed_one("SELECT nextval('orange_ids')", &[]);
        Some(row.map(|row| row.get::<_, i64>(0).max(0) as u64).map_err(pg_error))
    }
}

fn get_with(client: &mut impl postgres::GenericClient, tree: &str, key: &[u8]) -> sled::Result<Option<IVec>> {
    let sql = format!("SELECT value FROM orange_{tree} WHERE key = $1");
    let row = client.query_typed_opt(&sql, &[(&key, Type::BYTEA)]).map_err(pg_error)?;
    Ok(row.map(|row| IVec::from(row.get::<_, &[u8]>(0))))
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
