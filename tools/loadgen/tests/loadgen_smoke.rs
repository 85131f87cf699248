//! A tiny run of the load generator against the real binary: five calls
//! through prompt, ringback and bridge, heard byte-exact. Not a benchmark:
//! nothing here depends on speed.

use std::path::PathBuf;

use clap::Parser;
use courtline_loadgen::{run, Options};

/// The `courtline` binary of this build: cargo puts it in the target dir, one
/// level above this test (`target/debug/deps/loadgen_smoke-…`). It belongs to
/// another package, so `CARGO_BIN_EXE_courtline` does not exist here;
/// `cargo test --workspace` builds it.
fn courtline_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test knows its own path");
    let binary = test
        .parent()
        .and_then(|deps| deps.parent())
        .map(|target| target.join("courtline"))
        .expect("the test runs from a target directory");
    assert!(
        binary.is_file(),
        "{} is missing: build it first (`cargo build` at the top of the workspace, \
         or run this test with `cargo test --workspace`)",
        binary.display()
    );
    binary
}

#[test]
fn five_calls_are_placed_heard_bridged_and_hung_up() {
    let courtline = format!("--courtline={}", courtline_binary().display());
    let options = Options::parse_from([
        "courtline-loadgen",
        "--calls=5",
        "--rate=20",
        "--concurrency=5",
        "--prompt-ms=300",
        "--hold-s=2",
        "--talk",
        "--raw-s=0",
        "--max-duration-s=60",
        "--rtp-ports=42000-42999",
        courtline.as_str(),
    ]);
    let report = run(&options).expect("load generator runs");
    let text = report.render();
    assert_eq!(report.calls.attempted, 5, "{text}");
    assert_eq!(report.calls.completed, 5, "{text}");
    assert_eq!(report.calls.bridged, 5, "{text}");
    assert_eq!(report.media.prompts_complete, 5, "{text}");
    assert_eq!(report.media.prompt_frames_wrong, 0, "{text}");
    assert!(report.media.packets_received > 0, "{text}");
    assert!(report.server.cpu_seconds > 0.0, "{text}");
}
