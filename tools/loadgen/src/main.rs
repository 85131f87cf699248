//! `courtline-loadgen`: see the `courtline_loadgen` library and `BENCHMARKS.md`.

use std::process::ExitCode;

use clap::Parser;
use courtline_loadgen::{run, Options};

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(report) => {
            if options.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("courtline-loadgen: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.render());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("courtline-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
