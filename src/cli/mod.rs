//! Command-line parsing: the argh structs of every `orange` subcommand, turned once into validated
//! configs (`ServerConfig`, `AgentConfig`, `OperatorConfig`) and handed to the part that runs them.
//!
//! Files depend downwards in this order: `mod`, `server`, `backup`, `store`, `agent`, `token`, `operators`, `audit`,
//! `agents`, `cp`, `job`, `job_run`, `job_args`, `task`, `run`, `interrupt`, `cancel`, `follow`, `wait`,
//! `fake_api` (tests), `job_print`, `output`, `flags`, `operator`, `profiles`, `log_format`, `local_file`,
//! `config_file`, and `completions`, `man` and `argv`, which read the whole command tree of `Orange`.

pub mod agent;
pub mod agents;
pub mod argv;
pub mod audit;
pub mod backup;
pub mod cancel;
pub mod completions;
pub mod config_file;
pub mod cp;
#[cfg(test)]
mod fake_api;
pub mod flags;
pub mod follow;
pub mod interrupt;
pub mod job;
pub mod job_args;
pub mod job_print;
pub mod job_run;
pub mod local_file;
pub mod log_format;
pub mod man;
pub mod operator;
pub mod operators;
pub mod output;
pub mod profiles;
pub mod run;
pub mod server;
pub mod store;
pub mod task;
pub mod token;
pub mod wait;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use argh::{ArgsInfo, FromArgs};

use crate::protocol::read_secret_file;

/// orange: send work to a fleet of hosts that poll this server; no open ports on hosts, no Redis.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    example = "orange server --data /var/lib/orange",
    example = "orange agent --server https://orange.example:8890 --allow-shell",
    example = "orange task run --appid web-1 -- df -h /",
    example = "orange job run --label role=web --max-concurrency 10% -- 'systemctl restart nginx'",
    example = "orange cp ./app.conf --label role=web :/etc/app/app.conf",
    note = "Every command takes -h/--help and -V/--version, and --flag=value as well as --flag value. \
            `orange task run` exits with the remote command's status (255 when orange itself failed, \
            as ssh); see `orange task run --help`.",
    error_code(0, "done"),
    error_code(
        1,
        "orange failed (the server refused or could not be reached, a host did not succeed in a job)"
    ),
    error_code(2, "usage: an unknown command or option, a missing or bad value")
)]
pub struct Orange {
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    /// what to do
    #[argh(subcommand)]
    pub command: Option<Command>,
}

impl Orange {
    /// The `--config FILE` given to `orange server` or `orange agent`, if any.
    pub fn config_file(&self) -> Option<&std::path::Path> {
        match &self.command {
            Some(Command::Server(args)) => args.config.as_deref(),
            Some(Command::Agent(args)) => args.config.as_deref(),
            _ => None,
        }
    }

    /// The `--log-format` given to `orange server` or `orange agent` (typed or from its config
    /// file), if any.
    pub fn log_format(&self) -> Option<&str> {
        match &self.command {
            Some(Command::Server(args)) => args.log_format.as_deref(),
            Some(Command::Agent(args)) => args.log_format.as_deref(),
            _ => None,
        }
    }
}

/// The subcommands.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; argh's derive takes no Box
pub enum Command {
    /// `orange server`
    Server(server::ServerArgs),
    /// `orange store ...`
    Store(store::StoreArgs),
    /// `orange agent`
    Agent(agent::AgentArgs),
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
    /// `orange operator ...`
    Operator(operators::OperatorArgs),
    /// `orange audit`
    Audit(audit::AuditArgs),
    /// `orange cp`
    Cp(cp::CpArgs),
    /// `orange completions`
    Completions(completions::CompletionsArgs),
    /// `orange man`
    Man(man::ManArgs),
}

/// Print the server's enrollment key (on the server host): agents given it enroll at once.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "enroll-key")]
pub struct EnrollKeyArgs {
    /// the server's data directory
    #[argh(option)]
    pub data: PathBuf,
}

/// The exit status `orange` ends with when `orange` fails with an error of its own: 255 for
/// `task run`, whose other statuses are the remote command's (as ssh), [`argv::EXIT_FAILED`]
/// for every other command.
pub fn failure_code(orange: &Orange) -> i32 {
    match &orange.command {
        Some(Command::Task(task::TaskArgs { command: task::TaskCommand::Run(_) })) => run::EXIT_NO_CODE,
        _ => argv::EXIT_FAILED,
    }
}

/// Parses argv, runs the command and returns the process exit code.
pub fn run(orange: Orange) -> Result<i32> {
    if orange.version {
        println!("orange {}", env!("CARGO_PKG_VERSION"));
        return Ok(0);
    }
    match orange.command {
        None => bail!("no command given; try `orange --help`"),
        Some(Command::Server(args)) => server::run(args),
        Some(Command::Store(args)) => store::run(args),
        Some(Command::Agent(args)) => {
            let file = args.config.clone();
            let checked =
                log_format::check_flag(args.log_format.as_deref()).and_then(|()| agent::agent_config(args));
            let config = config_file::noting_file(checked, file.as_deref())?;
            crate::agent::run_blocking(config)?;
            Ok(0)
        }
        Some(Command::Task(args)) => task::run(args),
        Some(Command::Job(args)) => job::run(args),
        Some(Command::Agents(args)) => agents::run(args),
        Some(Command::Token(args)) => token::run(args),
        Some(Command::Operator(args)) => operators::run(args),
        Some(Command::Audit(args)) => audit::run(args),
        Some(Command::Cp(args)) => cp::run(args),
        Some(Command::Completions(args)) => completions::run(args),
        Some(Command::Man(_)) => man::run(),
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
