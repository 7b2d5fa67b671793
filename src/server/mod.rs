//! `orange server`: the agent endpoints of the original protocol, the operator API, long-poll
//! dispatch and the embedded sled store.

pub mod codec;
pub mod commit;
pub mod dispatch;
pub mod http;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `orange server` needs, validated once from the command line.
#[derive(Clone)]
pub struct ServerConfig {
    /// Directory of the database, the admin token file and nothing else.
    pub data_dir: PathBuf,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Admin bearer token given by flag or environment; else read or generated in `data_dir`.
    pub admin_token: Option<String>,
    /// How long a getTask long poll waits before answering "no task".
    pub poll_window: Duration,
    /// Timeout of tasks enqueued without one.
    pub default_task_timeout: Duration,
    /// sled page cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// Key that `register` calls must be signed with.
    pub enroll_key: String,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("poll_window", &self.poll_window)
            .field("default_task_timeout", &self.default_task_timeout)
            .field("cache_capacity_bytes", &self.cache_capacity_bytes)
            .field("enroll_key", &"***")
            .finish()
    }
}

/// Runs the server until SIGINT or SIGTERM (placeholder).
pub fn run_blocking(_config: ServerConfig) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
