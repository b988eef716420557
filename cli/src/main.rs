//! The `hyperjail` binary: parses runc's command line, wires the backends into the
//! runtime, and turns errors into one line on stderr (and the `--log` file) with a
//! non-zero exit status.

#![deny(unsafe_code)]

mod args;
mod commands;
mod log;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    log::open(cli.log.as_deref());
    if cli.debug {
        let argv: Vec<String> = std::env::args().collect();
        log::write(
            cli.log.as_deref(),
            cli.log_format,
            "debug",
            &format!("invoked: {}", argv.join(" ")),
        );
    }
    match commands::dispatch(&cli) {
        Ok(code) => ExitCode::from(code),
        // The reader of our output went away (`events | head`): nothing to report.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(0)
        }
        Err(e) => {
            let msg = one_line(&e);
            log::write(cli.log.as_deref(), cli.log_format, "error", &msg);
            eprintln!("hyperjail: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the message
/// already carries (our error types print their source inline).
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg.replace('\n', " ")
}
