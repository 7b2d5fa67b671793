//! An orange agent embedded in another Rust program, like the original library's
//! `Regist(callback)`: the program answers task type `greet` itself and leaves `ping` (and any
//! other type) to orange's built-in executors.
//!
//! ```text
//! cargo run --example embedded_agent -- http://127.0.0.1:8890 my-app
//! orange task run --app my-app --type greet --payload world     # -> "hello, world!"
//! ```
//! The server URL and app id come from the arguments, else `ORANGE_SERVER` and the host name;
//! the secret from `ORANGE_SECRET`, else one generated under `ORANGE_STATE` (default: the
//! agent's usual state directory).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use orange::agent::{AgentConfig, BuiltinExecutor, TaskHandler, TaskOutcome};
use orange::cli::AgentArgs;
use orange::protocol::WireTask;

/// This program's callback: `greet` is answered here, everything else by the built-ins.
struct Greeter {
    builtin: BuiltinExecutor,
}

impl TaskHandler for Greeter {
    fn run(&self, task: &WireTask) -> TaskOutcome {
        match task.task_type.as_str() {
            "greet" => greet(&task.payload),
            _ => self.builtin.run(task),
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
