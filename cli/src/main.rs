//! The `hyperjail` binary: parses runc's command line, wires the backends into the
//! runtime, and turns errors into one line on stderr (and the `--log` file) with a
//! non-zero exit status.

#![forbid(unsafe_code)]

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
    match commands::dispatch(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the whole cause chain joined.
            let msg = format!("{e:#}").replace('\n', " ");
            log::write(cli.log.as_deref(), cli.log_format, "error", &msg);
            eprintln!("hyperjail: {msg}");
            ExitCode::from(1)
        }
    }
}
