//! The `orange` binary: sets up logging, parses argv and hands over to the library.

use std::process::ExitCode;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use orange::cli::log_format::{ENV_LOG_FORMAT, LogFormat};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first();
    if !matches!(role.map(String::as_str), Some("server" | "agent")) {
        orange::cli::quiet_broken_pipe();
    }
    let orange = match orange::cli::argv::parse(&args) {
        orange::cli::argv::Parsed::Run(orange) => *orange,
        orange::cli::argv::Parsed::Exit { text, code } => return print_and_exit(&text, code),
    };
    // Set up once the flags are parsed, so that a config file's log_format counts; parsing logs
    // nothing.
    let format_env = std::env::var(ENV_LOG_FORMAT).ok();
    init_logging(LogFormat::chosen(orange.log_format(), format_env.as_deref()));
    let failure = orange::cli::failure_code(&orange);
    match orange::cli::run(orange) {
        Ok(code) => exit_code(code),
        Err(e) if e.downcast_ref::<orange::cli::argv::Usage>().is_some() => {
            eprintln!("orange: {e:#}");
            exit_code(orange::cli::argv::EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("orange: {e:#}");
            exit_code(failure)
        }
    }
}

/// `text` on stdout when `code` is 0 (help, the version), else on stderr; then `code`.
fn print_and_exit(text: &str, code: i32) -> ExitCode {
    use std::io::Write;
    let text = if text.ends_with('\n') { text.to_owned() } else { format!("{text}\n") };
    // Nothing is left to do if the terminal or pipe is gone.
    let _ = if code == 0 {
        std::io::stdout().write_all(text.as_bytes())
    } else {
        std::io::stderr().write_all(text.as_bytes())
    };
    exit_code(code)
}

/// `code` as a process exit status (one byte; anything else is 1).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Logs to stderr (in colour on a terminal) at the level `ORANGE_LOG` names, else `RUST_LOG`:
/// `info` (the default: lifecycle of the server, agents and jobs), `debug` (every task's
/// delivery, report and deadline too), `warn`, or per module like
/// `info,orange::server::store=debug`; as text lines, or one JSON object per line for `format`
/// [`LogFormat::Json`].
fn init_logging(format: LogFormat) {
    let variable = |name: &str| std::env::var(name).ok().filter(|text| !text.trim().is_empty());
    let (name, asked) = match variable("ORANGE_LOG") {
        Some(text) => ("ORANGE_LOG", Some(text)),
        None => ("RUST_LOG", variable("RUST_LOG")),
    };
    let (filter, refused) = match asked.as_deref().map(str::parse::<Targets>) {
        Some(Ok(targets)) => (targets, None),
        Some(Err(e)) => (Targets::new().with_default(LevelFilter::INFO), Some(e)),
        None => (Targets::new().with_default(LevelFilter::INFO), None),
    };
    let stderr_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (format == LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(stderr_is_terminal));
    let json = (format == LogFormat::Json)
        .then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr));
    tracing_subscriber::registry().with(text).with(json).with(filter).init();
    if let (Some(text), Some(e)) = (asked, refused) {
        tracing::warn!("{name}={text:?} is not a log filter ({e}); logging at info");
    }
}
