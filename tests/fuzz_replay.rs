//! Replays every saved fuzz input, the committed corpus (`fuzz/corpus/<target>/`) and every crash
//! or hang the fuzzer found (`fuzz/regressions/<target>/`), through the same functions the fuzz
//! targets call, in the ordinary test build: no instrumented build in CI. `scripts/fuzz.sh` runs
//! the fuzzer itself.

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `name`'s target on each saved input; a panic names the file that caused it.
fn replay(name: &str) {
    let (_, run) = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = files(&fuzz.join("corpus").join(name));
    assert!(!corpus.is_empty(), "no saved corpus for {name}");
    let regressions = files(&fuzz.join("regressions").join(name));
    let mut failed = Vec::new();
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    eprintln!(
        "{name}: {} corpus inputs, {} regressions replayed",
        corpus.len(),
        regressions.len()
    );
    assert!(failed.is_empty(), "{name} fails on {failed:#?}");
}

#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
    let mut bins: Vec<String> =
        files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets"))
            .iter()
            .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
            .collect();
    bins.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(bins, sorted, "each fuzz binary has its replay here");
}

#[test]
fn parse_decide() {
    replay("parse_decide");
}

#[test]
fn subject() {
    replay("subject");
}

#[test]
fn quote() {
    replay("quote");
}

#[test]
fn dsn() {
    replay("dsn");
}

#[test]
fn commands() {
    replay("commands");
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn templates() {
    replay("templates");
}
