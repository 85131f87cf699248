//! A tiny run of the load generator against the real binary: five calls
//! through prompt, ringback and bridge, heard byte-exact. Not a benchmark:
//! nothing here depends on speed.

use clap::Parser;
use courtline::loadgen::{run, Options};

#[test]
fn five_calls_are_placed_heard_bridged_and_hung_up() {
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
        concat!("--courtline=", env!("CARGO_BIN_EXE_courtline")),
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
