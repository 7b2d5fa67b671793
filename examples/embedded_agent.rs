//! An orange agent embedded in another Rust program, like the original library's
//! `Regist(callback)`: the program answers task type `greet` itself and leaves `ping` (and any
//! other type) to orange's built-in executors, handing them the task's context so that their
//! processes stream output live and stop on a cancel. The agent journals and reports every
//! outcome the same way, whoever produced it.
//!
//! ```text
//! cargo run --example embedded_agent -- http://127.0.0.1:8890 my-app
//! orange task run --app my-app --type greet --payload world     # -> "hello, world!"
//! ```
//! The server URL and app id come from the arguments, else `ORANGE_SERVER` and the host name;
//! the secret from `ORANGE_SECRET`, else one generated under `ORANGE_STATE` (default: the
//! agent's usual state directory), which also holds the task journal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use orange::agent::{AgentConfig, BuiltinExecutor, TaskContext, TaskHandler, TaskOutcome};
use orange::protocol::{Secret, WireTask};

/// This program's callback: `greet` is answered here, everything else by the built-ins.
struct Greeter {
    builtin: BuiltinExecutor,
}

impl TaskHandler for Greeter {
    fn run(&self, task: &WireTask) -> TaskOutcome {
        self.run_with(task, &TaskContext::detached())
    }

    fn run_with(&self, task: &WireTask, ctx: &TaskContext) -> TaskOutcome {
        match task.task_type.as_str() {
            "greet" if ctx.is_cancelled() => TaskOutcome::cancelled("cancelled before greeting"),
            "greet" => greet(&task.payload),
            _ => self.builtin.run_with(task, ctx),
        }
    }
}

fn greet(name: &str) -> TaskOutcome {
    let name = name.trim();
    if name.is_empty() {
        return TaskOutcome::failed("greet needs a name as its payload");
    }
    TaskOutcome::success(format!("hello, {name}!"))
}

/// The agent's config, built from this program's arguments and environment: no flag parser
/// involved, just the values.
fn agent_config() -> Result<AgentConfig> {
    let mut args = std::env::args().skip(1);
    let server = args.next().or_else(|| std::env::var("ORANGE_SERVER").ok());
    let Some(server) = server else {
        bail!("give the server URL as the first argument or set ORANGE_SERVER")
    };
    let mut builder = AgentConfig::builder(server)
        .labels(BTreeMap::from([("embedded".to_owned(), "true".to_owned())]))
        .max_tasks(2);
    if let Some(app_id) = args.next() {
        builder = builder.app_id(app_id);
    }
    if let Some(dir) = std::env::var_os("ORANGE_STATE") {
        builder = builder.state_dir(PathBuf::from(dir));
    }
    if let Ok(secret) = std::env::var("ORANGE_SECRET") {
        builder = builder.secret(Secret::new(secret.trim()));
    }
    builder.build()
}

fn main() -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let config = agent_config()?;
    let handler = Arc::new(Greeter { builtin: BuiltinExecutor::new(&config) });
    let stop = orange::agent::stop_on_signals()?;
    orange::agent::run(config, handler, stop)
}
