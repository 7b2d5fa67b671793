//! Command-line parsing: the argh structs of every `orange` subcommand, turned once into validated
//! configs (`ServerConfig`, `AgentConfig`, `OperatorConfig`) and handed to the part that runs them.

pub mod agent;
pub mod agents;
pub mod audit;
pub mod cancel;
#[cfg(test)]
mod fake_api;
pub mod flags;
pub mod follow;
pub mod interrupt;
pub mod job;
pub mod job_args;
pub mod job_print;
pub mod job_run;
pub mod operator;
pub mod output;
pub mod run;
pub mod server;
pub mod task;
pub mod token;
pub mod wait;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use argh::FromArgs;

use crate::protocol::read_secret_file;

/// orange: send work to a fleet of hosts that poll this server; no open ports on hosts, no Redis.
#[derive(FromArgs)]
pub struct Orange {
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    /// what to do
    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(FromArgs)]
#[argh(subcommand)]
pub enum Command {
    /// `orange server`
    Server(ServerArgs),
    /// `orange agent`
    Agent(AgentArgs),
    /// `orange task ...`
    Task(task::TaskArgs),
    /// `orange job ...`
    Job(job_args::JobArgs),
    /// `orange agents`
    Agents(agents::AgentsArgs),
    /// `orange enroll-key`
    EnrollKey(EnrollKeyArgs),
    /// `orange token ...`
    Token(token::TokenArgs),
    /// `orange audit`
    Audit(audit::AuditArgs),
}

/// Print the server's enrollment key (on the server host): agents given it enroll at once.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "enroll-key")]
pub struct EnrollKeyArgs {
    /// the server's data directory
    #[argh(option)]
    pub data: PathBuf,
}

/// Run the server: agent endpoints, operator API and the embedded database.
#[derive(FromArgs)]
#[argh(subcommand, name = "server")]
pub struct ServerArgs {
    /// data directory (created if missing)
    #[argh(option)]
    pub data: PathBuf,
    /// address to listen on (default 0.0.0.0:8890)
    #[argh(option, default = "String::from(\"0.0.0.0:8890\")")]
    pub listen: String,
    /// file holding the admin bearer token (default: ORANGE_ADMIN_TOKEN, else DIR/admin.token,
    /// generated on first start)
    #[argh(option)]
    pub admin_token_file: Option<PathBuf>,
    /// refused: ps shows argv to every user; use --admin-token-file FILE or ORANGE_ADMIN_TOKEN
    #[argh(option)]
    pub admin_token: Option<String>,
    /// seconds a getTask long poll waits for work before answering "no task" (default 20, max 50)
    #[argh(option, default = "20")]
    pub poll_window: u64,
    /// seconds a task may run when the operator gives no timeout (default 600)
    #[argh(option, default = "600")]
    pub default_timeout: u64,
    /// database cache size in MiB (default 64)
    #[argh(option, default = "64")]
    pub cache_mb: u64,
    /// file holding the key agents enroll with (default: ORANGE_ENROLL_KEY, else DIR/enroll.key,
    /// generated on first start; `orange enroll-key --data DIR` prints it)
    #[argh(option)]
    pub enroll_key_file: Option<PathBuf>,
    /// only `--enroll-key orange-forge`, the original's public key, which lets original clients
    /// enroll (insecure: anyone may use it); any other key is refused: use --enroll-key-file
    #[argh(option)]
    pub enroll_key: Option<String>,
    /// PEM certificate chain to serve HTTPS with (with --tls-key)
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key to serve HTTPS with (with --tls-cert)
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// seconds an agent has to acknowledge a task before it is handed out again (default 30)
    #[argh(option, default = "30")]
    pub ack_window: u64,
    /// seconds a task may wait for an offline agent before it ends expired (default 86400)
    #[argh(option, default = "86400")]
    pub ttl: u64,
    /// seconds after its timeout before a task whose agent went silent ends lost (default 60)
    #[argh(option, default = "60")]
    pub lost_grace: u64,
    /// seconds finished tasks and silent agents are kept (default 604800, 7 days)
    #[argh(option, default = "604800")]
    pub retention: u64,
    /// most output kept per task in MiB, head and tail (default 16)
    #[argh(option, default = "16")]
    pub output_cap_mb: u64,
    /// most agent requests handled at once, parked long polls not counted; past it agents are
    /// told to retry later with HTTP 429 (default 256)
    #[argh(option, default = "256")]
    pub max_inflight: usize,
    /// seconds an overloaded server tells agents to wait, spread up to twice that (default 2)
    #[argh(option, default = "2")]
    pub retry_after: u64,
    /// compact the database (rewrite its live data into a fresh copy) once it is larger than
    /// this many MiB and than 4 times its size after the last compaction (default 64)
    #[argh(option, default = "64")]
    pub compact_at_mb: u64,
}

/// Run an agent: register with the server, poll for tasks, run them and report.
#[derive(FromArgs)]
#[argh(subcommand, name = "agent")]
pub struct AgentArgs {
    /// server URL, e.g. http://10.0.0.1:8890 (default: ORANGE_SERVER)
    #[argh(option)]
    pub server: Option<String>,
    /// this agent's app id (default: the host name)
    #[argh(option)]
    pub appid: Option<String>,
    /// state directory holding the agent's secret (default: ~/.local/state/orange, or
    /// /var/lib/orange for root)
    #[argh(option)]
    pub state: Option<PathBuf>,
    /// file holding the agent's secret (else ORANGE_SECRET, else one generated in the state dir)
    #[argh(option)]
    pub secret_file: Option<PathBuf>,
    /// file holding the server's enrollment key (else ORANGE_ENROLL_KEY); with neither a key
    /// nor a token the agent enrolls `pending` and waits for `orange agents accept`
    #[argh(option)]
    pub enroll_key_file: Option<PathBuf>,
    /// file holding an enrollment token from `orange token create` (else ORANGE_ENROLL_TOKEN)
    #[argh(option)]
    pub enroll_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate (default: the system roots)
    #[argh(option)]
    pub ca_file: Option<PathBuf>,
    /// do not verify the server's certificate (warns on every start)
    #[argh(switch)]
    pub insecure: bool,
    /// allow `shell` tasks (command lines run with sh -c)
    #[argh(switch)]
    pub allow_shell: bool,
    /// directory of handler executables; a task of type T runs DIR/T
    #[argh(option)]
    pub handlers: Option<PathBuf>,
    /// operator label k=v (repeatable)
    #[argh(option)]
    pub label: Vec<String>,
    /// most tasks run at once (default 4)
    #[argh(option, default = "4")]
    pub max_tasks: usize,
}

/// Parses argv, runs the command and returns the process exit code.
pub fn run(orange: Orange) -> Result<i32> {
    if orange.version {
        println!("orange {}", env!("CARGO_PKG_VERSION"));
        return Ok(0);
    }
    match orange.command {
        None => bail!("no command given; try `orange --help`"),
        Some(Command::Server(args)) => {
            crate::server::run_blocking(server::server_config(args)?)?;
            Ok(0)
        }
        Some(Command::Agent(args)) => {
            crate::agent::run_blocking(agent::agent_config(args)?)?;
            Ok(0)
        }
        Some(Command::Task(args)) => task::run(args),
        Some(Command::Job(args)) => job::run(args),
        Some(Command::Agents(args)) => agents::run(args),
        Some(Command::Token(args)) => token::run(args),
        Some(Command::Audit(args)) => audit::run(args),
        Some(Command::EnrollKey(args)) => {
            let path = args.data.join(crate::server::ENROLL_KEY_FILE);
            let key = read_secret_file(&path).with_context(|| {
                format!("no enrollment key in {}; start the server once to generate it", args.data.display())
            })?;
            println!("{key}");
            Ok(0)
        }
    }
}

/// Lets an operator command die quietly when its reader goes away (`orange task list | head`),
/// like other Unix tools, instead of panicking on a write to a closed pipe. Not for the server
/// and the agent, which must outlive any one peer.
pub fn quiet_broken_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE has no preconditions; it happens
    // before any other thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
