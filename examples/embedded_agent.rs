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

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use orange::agent::{AgentConfig, BuiltinExecutor, TaskContext, TaskHandler, TaskOutcome};
use orange::cli::AgentArgs;
use orange::protocol::WireTask;

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

/// The agent's flags, as `orange agent` would parse them, from this program's arguments.
fn agent_args() -> AgentArgs {
    let mut args = std::env::args().skip(1);
    AgentArgs {
        server: args.next(),
        appid: args.next(),
        state: std::env::var_os("ORANGE_STATE").map(PathBuf::from),
        secret_file: None,
        enroll_key_file: None,
        enroll_token_file: None,
        ca_file: None,
        insecure: false,
        allow_shell: false,
        handlers: None,
        label: vec!["embedded=true".to_owned()],
        max_tasks: 2,
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let config = AgentConfig::from_args(agent_args())?;
    let handler = Arc::new(Greeter { builtin: BuiltinExecutor::new(&config) });
    let stop = orange::agent::stop_on_signals()?;
    orange::agent::run(config, handler, stop)
}
