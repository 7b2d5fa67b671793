//! The `orange` binary: sets up logging, parses argv and hands over to the library.

use std::process::ExitCode;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    init_logging();
    let role = std::env::args().nth(1);
    if !matches!(role.as_deref(), Some("server" | "agent")) {
        orange::cli::quiet_broken_pipe();
    }
    let orange: orange::cli::Orange = argh::from_env();
    match orange::cli::run(orange) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("orange: {e:#}");
            ExitCode::from(255)
        }
    }
}

/// Logs to stderr (in colour on a terminal) at the level `ORANGE_LOG` names: `info` (the
/// default), `warn`, `debug`, or per module like `info,orange::server::store=debug`.
fn init_logging() {
    let asked = std::env::var("ORANGE_LOG").ok().filter(|text| !text.trim().is_empty());
    let (filter, refused) = match asked.as_deref().map(str::parse::<Targets>) {
        Some(Ok(targets)) => (targets, None),
        Some(Err(e)) => (Targets::new().with_default(LevelFilter::INFO), Some(e)),
        None => (Targets::new().with_default(LevelFilter::INFO), None),
    };
    let stderr_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(stderr_is_terminal);
    tracing_subscriber::registry().with(layer).with(filter).init();
    if let (Some(text), Some(e)) = (asked, refused) {
        tracing::warn!("ORANGE_LOG={text:?} is not a log filter ({e}); logging at info");
    }
}
