//! The fuzz targets' bodies (`fuzz/src/lib.rs`) run over the committed seed
//! corpus, the RFC 4475 torture messages and every input a fuzzer ever
//! crashed on (`fuzz/regressions/<target>/`), in a normal `cargo test`: CI
//! keeps the targets compiling and the past crashes fixed without nightly.

#[path = "../fuzz/src/lib.rs"]
mod bodies;

use std::path::Path;

/// Every file directly in `dir` (none if it does not exist).
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// Runs `body` on the seeds and regressions of `target`, plus `extra` dirs.
fn run(target: &str, body: fn(&[u8]), extra: &[&str]) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![
        root.join("fuzz/seeds").join(target),
        root.join("fuzz/regressions").join(target),
    ];
    dirs.extend(extra.iter().map(|dir| root.join(dir)));
    let mut count = 0;
    for dir in dirs {
        for (name, bytes) in inputs(&dir) {
            let outcome = std::panic::catch_unwind(|| body(&bytes));
            assert!(outcome.is_ok(), "{target} panicked on {name}");
            count += 1;
        }
    }
    count
}

#[test]
fn sip_message_target_over_seeds_and_the_torture_corpus() {
    let count = run("sip_message", bodies::sip_message, &["tests/torture"]);
    assert!(count > 49, "only {count} inputs");
}

#[test]
fn sdp_target_over_seeds() {
    assert!(run("sdp", bodies::sdp, &[]) >= 3);
}

#[test]
fn rtp_target_over_seeds() {
    assert!(run("rtp", bodies::rtp, &[]) >= 4);
}
