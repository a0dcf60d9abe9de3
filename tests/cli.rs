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

/// `streamlens query` reads a config's store and prints the same answer as the query API, as a
/// table, JSON or CSV; a bad query fails naming the problem.
#[test]
fn query_prints_the_api_answer_as_table_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pipeline.toml"),
    )
    .unwrap();
    let config = dir.path().join("golden.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{dir}\"\n\n[source]\nkind = \"archive\"\npath = \"{input}\"\n\n[store]\nkind = \"embedded\"\npath = \"{dir}/golden.redb\"\n\n{pipeline}\n[dashboard]\nenabled = false\n",
            dir = dir.path().display(),
            input = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden/orders.ndjson.gz")
                .display(),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (ok, _, stderr) = streamlens(&["run", "--config", config, "--no-dashboard"]);
    assert!(ok, "{stderr}");
    let query = [
        "query",
        "--config",
        config,
        "--metric",
        "amount",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-01T02:00:00Z",
        "--interval",
        "20m",
        "--group-by",
        "status",
        "--filter",
        "status=paid,shipped",
    ];
    let with = |format: &str| {
        let mut args = query.to_vec();
        args.extend(["--format", format]);
        let (ok, stdout, stderr) = streamlens(&args);
        assert!(ok, "{stderr}");
        stdout
    };
    let json: serde_json::Value = serde_json::from_str(&with("json")).unwrap();
    let series = json["series"].as_array().unwrap();
    assert_eq!(
        series
            .iter()
            .map(|s| s["group"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["paid", "shipped"]
    );
    // 00:00 .. 01:07 in 20-minute buckets.
    assert!(series
        .iter()
        .all(|s| s["points"].as_array().unwrap().len() == 4));
    let csv = with("csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("group,start,start_time,value,final"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 8);
    for (row, point) in rows.iter().zip(
        series
            .iter()
            .flat_map(|s| s["points"].as_array().unwrap().iter().map(move |p| (s, p))),
    ) {
        assert_eq!(row[0], point.0["group"].as_str().unwrap());
        assert_eq!(row[1], point.1["start"].to_string());
        assert_eq!(row[3], point.1["value"].as_str().unwrap());
    }
    assert_eq!(rows[0][2], "2026-01-01T00:00:00Z");
    let table = with("table");
    let total = table.lines().last().unwrap();
    assert!(total.starts_with("total"), "{table}");
    for s in series {
        assert!(total.contains(s["total"].as_str().unwrap()), "{table}");
    }

    let (ok, _, stderr) = streamlens(&["query", "--config", config, "--metric", "revenue"]);
    assert!(!ok);
    assert!(
        stderr.contains("bad query: `metric`: unknown metric `revenue`"),
        "{stderr}"
    );
    let (ok, _, stderr) = streamlens(&[
        "query", "--config", config, "--metric", "amount", "--filter", "status",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--filter `status` is not `dimension=value1,value2`"),
        "{stderr}"
    );
}
