//! argv (the input split on NUL bytes) -> the clap parser of the `hyperjail` CLI.
//! Only parsing: no command is run.
#![no_main]

#[allow(dead_code)]
#[path = "../../cli/src/args.rs"]
mod args;

use clap::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let argv = std::iter::once("hyperjail".to_string()).chain(
        data.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned()),
    );
    match args::Cli::try_parse_from(argv) {
        Ok(cli) => {
            let _ = format!("{cli:?}");
        }
        Err(e) => {
            // The message the binary prints (help, version or an error).
            let _ = e.render().to_string();
        }
    }
});
