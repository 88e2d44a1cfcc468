//! Replays every fuzz corpus file through its goclaw::fuzz entry: the inputs
//! the fuzzers start from (and any crash they ever found, once committed)
//! keep passing in plain `cargo test`. A local `cargo fuzz run` grows the
//! corpus; those files are replayed too.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

type Entry = fn(&[u8]);

#[test]
fn the_fuzz_corpus_replays_without_a_panic() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let entries: [(&str, Entry); 4] = [
        ("request_frame", goclaw::fuzz::request_frame),
        ("connect_params", goclaw::fuzz::connect_params),
        ("invoke_result", goclaw::fuzz::invoke_result),
        ("upgrade_request", goclaw::fuzz::upgrade_request),
    ];
    for (target, entry) in entries {
        let files: Vec<_> = fs::read_dir(corpus.join(target)).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(files.len() >= 3, "{target}: seed corpus missing");
        for file in files {
            match fs::read(&file) {
                Ok(input) => entry(&input),
                // A running fuzzer minimizes its corpus under our feet.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => panic!("{}: {e}", file.display()),
            }
        }
    }
}
