//! Every committed fuzz corpus file, replayed through the same checks the fuzz targets run
//! (`fuzz/checks.rs`), on stable Rust: the seeds and every crash once found (kept as named
//! regression files) stay fixed without a fuzzer.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `target`'s check over each file of `fuzz/corpus/<target>`, which must not be empty.
fn replay(target: &str) {
    let check = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .unwrap_or_else(|| panic!("no check for {target}"));
    let dir = Path::new("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails {target}", file.display());
    }
}

#[test]
fn every_target_has_a_corpus_replayed_here() {
    let dirs: Vec<String> = std::fs::read_dir("fuzz/corpus")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for (name, _) in checks::TARGETS {
        assert!(dirs.iter().any(|d| d == name), "no fuzz/corpus/{name}");
    }
    for dir in &dirs {
        assert!(
            checks::TARGETS.iter().any(|(name, _)| name == dir),
            "fuzz/corpus/{dir} belongs to no target"
        );
    }
}

#[test]
fn config_toml() {
    replay("config_toml");
}

#[test]
fn sticky_decode() {
    replay("sticky_decode");
}

#[test]
fn decide() {
    replay("decide");
}

#[test]
fn admin_body() {
    replay("admin_body");
}

#[test]
fn if_match() {
    replay("if_match");
}

#[test]
fn percent_decode() {
    replay("percent_decode");
}

#[test]
fn duration_size() {
    replay("duration_size");
}
