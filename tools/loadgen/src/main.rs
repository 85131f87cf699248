//! `courtline-loadgen`: see the `courtline_loadgen` library and `BENCHMARKS.md`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use courtline_loadgen::{raw, run, Options};

fn main() -> ExitCode {
    let options = Options::parse();
    if options.raw_only {
        return match raw::measure(Duration::from_secs_f64(options.raw_s.max(0.5))) {
            Ok(limit) => {
                println!("{limit}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("courtline-loadgen: raw loopback test: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
