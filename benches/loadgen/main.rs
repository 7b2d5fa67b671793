//! The load generator: drives the real release `orange server` over loopback HTTP with
//! simulated agents (one async process, one keep-alive connection per agent) and real agents,
//! and prints each scenario's figures as a markdown table.
//!
//! Run: `cargo bench --bench loadgen -- SCENARIO [--agents N] [--tasks N] [--secs N] [--runs N]
//! [--poll-window S] [--data DIR] [--compact-at SECS] [--store postgres://USER@HOST/DB]
//! [--servers N]`
//! with SCENARIO one of `latency`, `throughput`, `fanout`, `crossing`, `idle`, `restart`,
//! `footprint`. With `--store` (`latency`, `throughput`, `fanout`, `crossing`) every server
//! keeps the fleet in that PostgreSQL database (which must exist; the password from
//! `ORANGE_STORE_PASSWORD`), emptied of orange's tables before the run; `--servers N` starts N
//! servers on it and spreads the agents and the enqueuers round robin over them. `crossing`
//! (two servers unless `--servers` says more) parks one agent on server 0 and enqueues through
//! server 1.
//!
//! Layout:
//! - `http.rs`: one HTTP/1 connection; the operator API calls.
//! - `sim.rs`: the simulated agent (register, long poll, ping, `doing`, report).
//! - `procs.rs`: the real server and agent processes (killed on drop), `/proc` readings.
//! - `store.rs`: the store named in the report; emptying the PostgreSQL database.
//! - `report.rs`: the machine, percentiles, tables.
//! - one file per scenario.

mod crossing;
mod fanout;
mod footprint;
mod http;
mod idle;
mod latency;
mod procs;
mod report;
mod restart;
mod sim;
mod store;
mod throughput;

use anyhow::{Context, Result, anyhow, bail};

use crate::procs::Servers;

/// The options a scenario may read; each has its own defaults for the ones not given.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Number of simulated agents.
    pub agents: Option<usize>,
    /// Number of tasks (or stored tasks, for `restart`).
    pub tasks: Option<usize>,
    /// Length of the measured window in seconds.
    pub secs: Option<u64>,
    /// Number of runs (round trips of `task run`, restarts).
    pub runs: Option<usize>,
    /// Concurrent enqueuers (`throughput`).
    pub enqueuers: Option<usize>,
    /// Tasks per enqueue (`throughput`).
    pub batch: Option<usize>,
    /// Tasks an agent takes per poll and reports per call, through the batch feature
    /// (`throughput`; 1, the default, is the protocol every orange agent speaks).
    pub per_poll: Option<usize>,
    /// The server's `--poll-window` in seconds (its default when not given).
    pub poll_window: Option<u64>,
    /// A data directory to keep (`restart`: seeded only if it holds no database yet;
    /// `throughput`: the server runs on it).
    pub data: Option<std::path::PathBuf>,
    /// Seconds into the measured window at which the server is told to compact (`throughput`).
    pub compact_at: Option<u64>,
    /// The PostgreSQL database every server keeps the fleet in (`--store URL`), instead of
    /// its data directory.
    pub store: Option<String>,
    /// Number of servers on that database (1 when not given).
    pub servers: Option<usize>,
}

impl Options {
    /// Extra `orange server` flags these options ask for. The overload guard (`--max-inflight`,
    /// and `--max-unverified-inflight` for the registrations) is set above any fleet the bench runs, so that it measures the server, not the guard:
    /// simulated agents, unlike real ones, do not wait out a 429.
    pub fn server_args(&self) -> Vec<String> {
        let mut args =
            ["--max-inflight", "20000", "--max-unverified-inflight", "20000"].map(str::to_owned).to_vec();
        if let Some(secs) = self.poll_window {
            args.extend(["--poll-window".to_owned(), secs.to_string()]);
        }
        if self.compact_at.is_some() {
            // Only the compaction asked for (SIGUSR1) runs, not one the size rule starts.
            args.extend(["--compact-at-mb".to_owned(), "1048576".to_owned()]);
        }
        if let Some(url) = &self.store {
            args.extend(["--store".to_owned(), url.clone()]);
        }
        args
    }

    /// Starts the servers these options ask for, server 0 on data directory `first` (see
    /// [`Servers::start`]).
    pub fn start_servers(&self, first: &std::path::Path) -> Result<Servers> {
        let store = store::describe(self.store.as_deref());
        Servers::start(first, self.servers.unwrap_or(1), store, &self.server_args())
    }

    /// Refuses `--store` and `--servers` where `scenario` cannot use them.
    fn check_store(&self, scenario: &str) -> Result<()> {
        let servers = self.servers.unwrap_or(1);
        if servers == 0 {
            bail!("--servers must be at least 1");
        }
        if servers > 1 && self.store.is_none() {
            bail!("--servers {servers} needs --store: several servers share one PostgreSQL database");
        }
        let own_dir = matches!(scenario, "idle" | "restart" | "footprint");
        if (self.store.is_some() || servers > 1) && own_dir {
            bail!(
                "{scenario} runs on one server's data directory: --store and --servers are for latency, throughput, fanout and crossing"
            );
        }
        if scenario == "crossing" && (self.store.is_none() || servers < 2) {
            bail!("crossing needs --store and two servers or more");
        }
        Ok(())
    }
}

const USAGE: &str = "usage: cargo bench --bench loadgen -- latency|throughput|fanout|crossing|idle|restart|footprint \
                     [--agents N] [--tasks N] [--secs N] [--runs N] [--enqueuers N] [--batch N] [--per-poll N] [--poll-window S] [--data DIR] [--compact-at SECS] \
                     [--store postgres://USER@HOST/DB (an existing database, emptied of orange's tables; password from ORANGE_STORE_PASSWORD)] [--servers N]";

fn main() {
    if let Err(e) = run() {
        eprintln!("loadgen: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    // cargo bench passes `--bench`; everything else is ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    // A plain `cargo bench` runs every bench with no scenario: skip rather than fail.
    let Some((scenario, rest)) = args.split_first() else {
        eprintln!("loadgen: no scenario given; skipping\n{USAGE}");
        return Ok(());
    };
    let mut options = parse_options(rest)?;
    if scenario == "crossing" && options.store.is_some() {
        options.servers.get_or_insert(2);
    }
    options.check_store(scenario)?;
    let fds = raise_fd_limit();
    println!("Machine: {}. Open files allowed: {fds}.\n", report::machine());
    // Before the runtime: the synchronous client runs a runtime of its own.
    if let Some(url) = &options.store {
        let dropped = store::reset(url)?;
        println!("Emptied {url} of orange's tables ({} dropped).\n", dropped.len());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    match scenario.as_str() {
        "latency" => runtime.block_on(latency::run(&options)),
        "throughput" => runtime.block_on(throughput::run(&options, fds)),
        "fanout" => runtime.block_on(fanout::run(&options, fds)),
        "crossing" => runtime.block_on(crossing::run(&options)),
        "idle" => runtime.block_on(idle::run(&options, fds)),
        "restart" => runtime.block_on(restart::run(&options)),
        "footprint" => runtime.block_on(footprint::run(&options)),
        other => bail!("unknown scenario {other:?}\n{USAGE}"),
    }
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        if flag == "--data" {
            options.data = Some(value.into());
            continue;
        }
        if flag == "--store" {
            options.store = Some(value.clone());
            continue;
        }
        let number: usize = value.parse().with_context(|| format!("{flag} {value:?} is not a number"))?;
        match flag.as_str() {
            "--agents" => options.agents = Some(number),
            "--tasks" => options.tasks = Some(number),
            "--secs" => options.secs = Some(number as u64),
            "--runs" => options.runs = Some(number),
            "--enqueuers" => options.enqueuers = Some(number),
            "--batch" => options.batch = Some(number),
            "--per-poll" => options.per_poll = Some(number),
            "--poll-window" => options.poll_window = Some(number as u64),
            "--compact-at" => options.compact_at = Some(number as u64),
            "--servers" => options.servers = Some(number),
            _ => bail!("unknown option {flag:?}\n{USAGE}"),
        }
    }
    Ok(options)
}

/// Raises the soft open-files limit to the hard limit; the limit now in force.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

/// Fails early when `agents` connections (plus slack) would not fit the open-files limit.
pub fn check_fds(agents: usize, fds: u64) -> Result<()> {
    let needed = agents as u64 + 64;
    if needed > fds {
        bail!("{agents} agents need about {needed} open files; the hard limit here is {fds} (ulimit -Hn)");
    }
    Ok(())
}
