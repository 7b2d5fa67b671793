//! The two engines the store's tests run on: each rule is tested once, the same body run on
//! sled and on PostgreSQL (`test_case`: a test named `x` runs as `x::sled` and `x::postgres`).
//! PostgreSQL is a test server this process starts (`tests/it/support/postgres.rs`), one
//! database per store.

use std::sync::Arc;

use super::{Policy, Store};
use crate::server::store::PgTarget;

#[path = "../../../tests/it/support/postgres.rs"]
mod cluster;

/// Which engine a test's store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The embedded sled database in a data directory.
    Sled,
    /// A database of the test PostgreSQL server.
    Postgres,
}

/// Where a test's store lives: a data directory, and on PostgreSQL a database of its own.
/// Opening it again reopens the same store.
pub struct Place {
    dir: tempfile::TempDir,
    database: Option<String>,
}

impl Place {
    /// A new, empty place on `engine`.
    pub fn new(engine: Engine) -> Place {
        let dir = tempfile::tempdir().expect("a temp dir");
        let database = (engine == Engine::Postgres).then(|| cluster::cluster().create_database());
        Place { dir, database }
    }

    /// The data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The connection settings of its database, on PostgreSQL.
    pub fn target(&self) -> Option<PgTarget> {
        self.database.as_deref().map(target)
    }

    /// Opens the store here with `policy`.
    pub fn open(&self, policy: Policy) -> Store {
        self.try_open(policy).expect("open the store")
    }

    /// Opens the store here with `policy`, or says why not.
    pub fn try_open(&self, policy: Policy) -> Result<Store, super::StoreError> {
        match &self.database {
            None => Store::open(self.dir.path(), 8 * 1024 * 1024, policy),
            Some(name) => Store::open_postgres(&target(name), policy, Arc::default()),
        }
    }
}

/// The connection settings of database `name` on the test server.
pub fn target(name: &str) -> PgTarget {
    let cluster = cluster::cluster();
    let mut config = postgres::Config::new();
    config.host_path(cluster.socket_dir()).user(cluster::PG_USER).dbname(name);
    // A Unix socket: the default `prefer` never gets to TLS, and builds without a file.
    let (_, options) = super::pg_tls::split_url("postgres://").expect("the default options");
    let tls = super::pg_tls::connector(&options).expect("a connector without roots");
    PgTarget { config, shown: cluster.url(name), tls }
}
