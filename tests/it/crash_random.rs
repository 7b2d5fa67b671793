//! The randomized crash test: round after round, writers enqueue tasks and jobs through the
//! admin API while real orange agents take, acknowledge, run and report them, and the server is
//! SIGKILLed at a random moment, then restarted on the same data directory. After each restart
//! every enqueue that was answered 2xx is still there; at the end every acknowledged task ran
//! exactly once (each task's command appends its id to a marker file), tasks queued to one agent
//! ran in the order they were enqueued, and every job finished with all its targets.
//!
//! The same on PostgreSQL (one server on a database of the test cluster), where a queue's
//! order across a crash is not promised.
//!
//! The moments are drawn from a seeded generator; the seed is printed, and
//! `ORANGE_CRASH_SEED=N` replays it (`ORANGE_CRASH_ROUNDS=N` changes the number of rounds).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orange::client::AdminClient;
use orange::protocol::admin::{EnqueueReply, TaskList};
use orange::protocol::jobs::{JobState, JobView};
use serde_json::json;

use crate::support::{Agent, AgentOpts, Server, ServerOpts, try_wait_until, wait_until};

/// Rounds of enqueue, kill, restart and check, unless `ORANGE_CRASH_ROUNDS` says otherwise.
const ROUNDS: usize = 20;
/// Agents running the tasks, one task at a time each, so that their marker files show the order.
const AGENTS: usize = 5;
/// Threads enqueuing through the admin API during each round.
const WRITERS: usize = 3;
/// The earliest and latest moment of a round's SIGKILL, in ms after its writers start.
const KILL_AFTER_MS: (u64, u64) = (100, 1300);
/// One writer step in this many creates a job over every agent instead of enqueuing a task.
const JOB_EVERY: u64 = 40;
/// How long the agents may take, after the last round, to run everything acknowledged.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// A small seeded generator (splitmix64): the same seed draws the same moments and choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

/// The seed from `ORANGE_CRASH_SEED`, else from the clock; printed so that a failure can be
/// replayed.
fn seed() -> u64 {
    let seed = match std::env::var("ORANGE_CRASH_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|e| panic!("ORANGE_CRASH_SEED={text:?}: {e}")),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        }
    };
    eprintln!("crash_random: seed {seed} (replay with ORANGE_CRASH_SEED={seed})");
    seed
}

fn rounds() -> usize {
    std::env::var("ORANGE_CRASH_ROUNDS")
        .map_or(ROUNDS, |n| n.parse().expect("ORANGE_CRASH_ROUNDS is a number"))
}

/// A task enqueue the server answered 2xx: to which agent, and when it was sent and answered.
#[derive(Debug, Clone)]
struct Acked {
    agent: String,
    id: String,
    sent: Instant,
    answered: Instant,
}

/// What the writers were told: acknowledged tasks and jobs, and how many calls got no answer.
#[derive(Debug, Default)]
struct Ledger {
    tasks: Vec<Acked>,
    jobs: Vec<String>,
    unanswered: usize,
}

/// Where the agents' tasks write their ids: one file per agent for tasks, one for job tasks.
struct Markers {
    dir: tempfile::TempDir,
}

impl Markers {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The shell command that appends the running task's id to the file `name`.
    fn command(&self, name: &str) -> String {
        format!("echo \"$ORANGE_TASK_ID\" >> '{}'", self.file(name).display())
    }

    /// The ids in the file `name`, in the order they were written.
    fn read(&self, name: &str) -> Vec<String> {
        match std::fs::read_to_string(self.file(name)) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", self.file(name).display()),
        }
    }
}

fn agent_name(i: usize) -> String {
    format!("crash-{i}")
}

/// One writer step: enqueue one task to a random agent, or (now and then) a job over all.
fn write_once(admin: &AdminClient, markers: &Markers, rng: &mut Rng, ledger: &Mutex<Ledger>) {
    if rng.between(0, JOB_EVERY) == 0 {
        let body = json!({"targets": {"all": true}, "task_type": "shell",
                          "payload": markers.command("jobs"), "max_concurrency": "2"});
        let answer: Result<JobView, _> = admin.post("/api/v1/jobs", &body);
        let mut ledger = ledger.lock().unwrap();
        match answer {
            Ok(job) => ledger.jobs.push(job.job_id),
            Err(_) => ledger.unanswered += 1,
        }
        return;
    }
    let agent = agent_name(rng.between(0, AGENTS as u64) as usize);
    let body = json!({"app_ids": [agent], "task_type": "shell", "payload": markers.command(&agent)});
    let sent = Instant::now();
    let answer: Result<EnqueueReply, _> = admin.post("/api/v1/tasks", &body);
    let answered = Instant::now();
    let mut ledger = ledger.lock().unwrap();
    match answer {
        Ok(reply) => {
            assert_eq!(reply.tasks.len(), 1, "one task per enqueue: {reply:?}");
            let id = reply.tasks[0].task_id.clone();
            ledger.tasks.push(Acked { agent, id, sent, answered });
        }
        Err(_) => ledger.unanswered += 1,
    }
}

/// Enqueues until `stop`, with short random pauses.
fn writer(server: &Server, markers: &Markers, mut rng: Rng, stop: &AtomicBool, ledger: &Mutex<Ledger>) {
    let admin = AdminClient::new(&server.url, &server.token, Duration::from_secs(10));
    while !stop.load(Ordering::SeqCst) {
        write_once(&admin, markers, &mut rng, ledger);
        std::thread::sleep(Duration::from_millis(rng.between(20, 120)));
    }
}

/// One round: writers run, the server is SIGKILLed at a random moment and restarted.
fn round(server: &mut Server, markers: &Markers, rng: &mut Rng, ledger: &Mutex<Ledger>) {
    let stop = AtomicBool::new(false);
    let kill_after = Duration::from_millis(rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1));
    let seeds: Vec<u64> = (0..WRITERS).map(|_| rng.next()).collect();
    std::thread::scope(|scope| {
        let shared = &*server;
        let writers: Vec<_> = seeds
            .into_iter()
            .map(|seed| {
                let stop = &stop;
                scope.spawn(move || writer(shared, markers, Rng(seed), stop, ledger))
            })
            .collect();
        std::thread::sleep(kill_after);
        // SAFETY: kill(2) with the pid of the server child this test started and has not reaped.
        unsafe { libc::kill(shared.pid() as libc::pid_t, libc::SIGKILL) };
        stop.store(true, Ordering::SeqCst);
        for writer in writers {
            writer.join().expect("writer thread");
        }
    });
    server.restart();
}

/// Every task of `agent` the server lists (the per-agent list stays well under its 1000).
fn listed(server: &Server, agent: &str) -> HashMap<String, String> {
    let list: TaskList = server
        .admin()
        .get(&format!("/api/v1/tasks?app_id={agent}&limit=1000"))
        .unwrap_or_else(|e| panic!("list tasks of {agent}: {e}"));
    assert!(list.tasks.len() < 1000, "{agent} has too many tasks to list in one page");
    list.tasks.into_iter().map(|t| (t.task_id, t.status.as_str().to_owned())).collect()
}

/// Asserts every acknowledged task and job is known to the restarted server.
fn check_present(server: &Server, ledger: &Ledger, round: usize) {
    for i in 0..AGENTS {
        let agent = agent_name(i);
        let listed = listed(server, &agent);
        let lost: Vec<&str> = ledger
            .tasks
            .iter()
            .filter(|t| t.agent == agent && !listed.contains_key(&t.id))
            .map(|t| t.id.as_str())
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged tasks of {agent} lost by the SIGKILL: {lost:?}"
        );
    }
    for id in &ledger.jobs {
        let job: Result<JobView, _> = server.admin().get(&format!("/api/v1/jobs/{id}"));
        job.unwrap_or_else(|e| panic!("round {round}: acknowledged job {id} lost by the SIGKILL: {e}"));
    }
}

/// How many times each id was written to any marker file.
fn runs(markers: &Markers) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for name in (0..AGENTS).map(agent_name).chain(["jobs".to_owned()]) {
        for id in markers.read(&name) {
            *runs.entry(id).or_insert(0) += 1;
        }
    }
    runs
}

/// Asserts no task ran twice, and every acknowledged one ran.
fn check_ran_once(markers: &Markers, ledger: &Ledger) {
    let runs = runs(markers);
    let twice: BTreeMap<&String, &usize> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks run more than once by an agent's executor: {twice:?}");
    let never: Vec<&str> =
        ledger.tasks.iter().filter(|t| !runs.contains_key(&t.id)).map(|t| t.id.as_str()).collect();
    assert!(never.is_empty(), "acknowledged tasks never run: {never:?}");
}

/// Asserts per agent: a task enqueued after another's enqueue was answered ran after it.
fn check_order(markers: &Markers, ledger: &Ledger) {
    for i in 0..AGENTS {
        let agent = agent_name(i);
        let ran: HashMap<String, usize> =
            markers.read(&agent).into_iter().enumerate().map(|(at, id)| (id, at)).collect();
        let mine: Vec<&Acked> = ledger.tasks.iter().filter(|t| t.agent == agent).collect();
        for a in &mine {
            for b in mine.iter().filter(|b| a.answered < b.sent) {
                assert!(
                    ran[&a.id] < ran[&b.id],
                    "{agent} ran {} (line {}) before {} (line {}), which was enqueued first",
                    b.id,
                    ran[&b.id],
                    a.id,
                    ran[&a.id]
                );
            }
        }
    }
}

/// Waits until every acknowledged task ran and every job is done; then asserts their ends.
fn drain(server: &Server, markers: &Markers, ledger: &Ledger) {
    let wanted: HashSet<&str> = ledger.tasks.iter().map(|t| t.id.as_str()).collect();
    let all_ran = try_wait_until(DRAIN_DEADLINE, || {
        let runs = runs(markers);
        wanted.iter().all(|id| runs.contains_key(*id))
    });
    if !all_ran {
        let runs = runs(markers);
        let never: Vec<String> = ledger
            .tasks
            .iter()
            .filter(|t| !runs.contains_key(&t.id))
            .map(|t| format!("{} of {} ({})", t.id, t.agent, listed(server, &t.agent)[&t.id]))
            .collect();
        panic!("acknowledged tasks not run within {DRAIN_DEADLINE:?}: {never:?}");
    }
    for i in 0..AGENTS {
        let agent = agent_name(i);
        wait_until(DRAIN_DEADLINE, "every acknowledged task to succeed", || {
            let listed = listed(server, &agent);
            ledger.tasks.iter().filter(|t| t.agent == agent).all(|t| listed[&t.id] == "succeeded")
        });
    }
    for id in &ledger.jobs {
        let mut job: JobView = server.admin().get(&format!("/api/v1/jobs/{id}")).unwrap();
        wait_until(DRAIN_DEADLINE, "every job to finish", || {
            job = server.admin().get(&format!("/api/v1/jobs/{id}")).unwrap();
            job.done
        });
        let ends = (job.state, job.counts.succeeded, job.targets);
        assert_eq!(ends, (JobState::Finished, AGENTS as u32, AGENTS as u32), "job {id}: {job:?}");
    }
}

fn start_agents(server: &Server) -> Vec<Agent> {
    let opts = AgentOpts { allow_shell: true, max_tasks: Some(1), ..AgentOpts::default() };
    let mut agents: Vec<Agent> =
        (0..AGENTS).map(|i| Agent::start(server, &agent_name(i), opts.clone())).collect();
    for agent in &mut agents {
        agent.wait_online(server, Duration::from_secs(30));
    }
    agents
}

#[test]
fn random_sigkills_lose_no_acknowledged_write_run_no_task_twice_and_keep_each_queue_in_order() {
    let opts = ServerOpts { ack_window: Some(3), poll_window: Some(5), ..ServerOpts::default() };
    crash_rounds(opts, Order::Kept);
}

#[test]
fn on_postgresql_random_sigkills_lose_no_acknowledged_write_and_run_no_task_twice() {
    let database = crate::support::postgres::cluster().create_database();
    let opts = ServerOpts {
        ack_window: Some(3),
        poll_window: Some(5),
        extra_args: vec!["--store".into(), crate::support::postgres::cluster().url(&database)],
        ..ServerOpts::default()
    };
    // A server starting on a database does not put the deliveries not yet acknowledged back at
    // the front at once (another server may have just made them): their ack window does, so an
    // agent may get the task queued behind one first.
    crash_rounds(opts, Order::NotChecked);
}

/// Whether the agents' queues must keep their order across the crashes.
#[derive(PartialEq)]
enum Order {
    Kept,
    NotChecked,
}

/// The rounds on a server started with `opts`, then the checks.
fn crash_rounds(opts: ServerOpts, order: Order) {
    let started = Instant::now();
    let mut rng = Rng(seed());
    let mut server = Server::start(opts);
    let markers = Markers { dir: tempfile::TempDir::with_prefix("orange-crash-markers-").unwrap() };
    let mut agents = start_agents(&server);
    let ledger = Mutex::new(Ledger::default());
    let rounds = rounds();
    for n in 0..rounds {
        round(&mut server, &markers, &mut rng, &ledger);
        check_present(&server, &ledger.lock().unwrap(), n);
    }
    let ledger = ledger.into_inner().unwrap();
    eprintln!(
        "crash_random: {rounds} rounds, {} tasks and {} jobs acknowledged, {} calls unanswered, {:?}",
        ledger.tasks.len(),
        ledger.jobs.len(),
        ledger.unanswered,
        started.elapsed()
    );
    assert!(ledger.tasks.len() >= rounds, "too few acknowledged tasks to say anything");
    drain(&server, &markers, &ledger);
    check_ran_once(&markers, &ledger);
    if order == Order::Kept {
        check_order(&markers, &ledger);
    }
    for agent in &mut agents {
        agent.assert_running();
    }
    eprintln!("crash_random: checked in {:?}", started.elapsed());
}
