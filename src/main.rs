//! The `orange` binary: sets up logging, parses argv and hands over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORANGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
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
