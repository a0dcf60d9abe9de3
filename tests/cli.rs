//! The `streamlens` binary: bad configs are refused with the file, line and key named; the shipped
//! sample is exactly what the generator makes.

use std::process::Command;

fn streamlens(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamlens"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_key_fails_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[source]\nkind = \"archive\"\npath = \"x.ndjson\"\n\n[pipeline]\nwindows = [\"1m\"]\nmetrix = []\n",
    )
    .unwrap();
    let (ok, _, stderr) = streamlens(&["check", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("line 7"), "{stderr}");
    assert!(stderr.contains("metrix"), "{stderr}");
}

#[test]
fn an_unusable_window_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "[source]\nkind = \"archive\"\npath = \"x\"\n[pipeline]\nwindows = [\"90ms\"]\n",
    )
    .unwrap();
    let (ok, _, stderr) = streamlens(&["check", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("`90ms` must be whole seconds"), "{stderr}");
}

#[test]
fn the_shipped_sample_is_what_the_generator_makes() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("orders.ndjson.gz");
    let (ok, stdout, stderr) = streamlens(&["gen-sample", "--out", fresh.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("wrote 3000 changes"), "{stdout}");
    let read = |p: &std::path::Path| {
        let mut lines = Vec::new();
        streamlens_ingest::archive::read_batches(p, 1000, |b| {
            assert!(b.quarantined.is_empty());
            lines.extend(b.events);
            true
        })
        .unwrap();
        lines
    };
    let shipped = read(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/orders.ndjson.gz"),
    );
    assert_eq!(shipped.len(), 3000);
    assert_eq!(read(&fresh), shipped);
}
