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
    changes_prints_an_items_changes(config);
}

/// `streamlens changes` on the store the query test filled: an item's changes are the records
/// of that key, in order; a MODIFY shows `attribute: old → new`; pages chain; bad flags are named.
fn changes_prints_an_items_changes(config: &str) {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/orders.ndjson.gz"),
        )
        .unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // An item with a MODIFY of its status.
    let modify = records
        .iter()
        .find(|r| {
            let d = &r["dynamodb"];
            r["eventName"] == "MODIFY" && d["OldImage"]["status"] != d["NewImage"]["status"]
        })
        .unwrap();
    let pk = modify["dynamodb"]["Keys"]["pk"]["S"].as_str().unwrap();
    let mut want: Vec<(i64, String, &str)> = records
        .iter()
        .filter(|r| r["dynamodb"]["Keys"]["pk"]["S"] == pk)
        .map(|r| {
            let d = &r["dynamodb"];
            (
                d["ApproximateCreationDateTime"].as_i64().unwrap(),
                format!("{:0>40}", d["SequenceNumber"].as_str().unwrap()),
                r["eventID"].as_str().unwrap(),
            )
        })
        .collect();
    want.sort();
    let key = format!("pk={pk}");
    let (ok, stdout, stderr) = streamlens(&[
        "changes", "--config", config, "--key", &key, "--all", "--limit", "2", "--format", "ndjson",
    ]);
    assert!(ok, "{stderr}");
    let got: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(want.len() > 2, "{want:?}");
    assert_eq!(
        got.iter()
            .map(|c| c["event_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        want.iter().map(|w| w.2).collect::<Vec<_>>()
    );

    let (ok, table, stderr) = streamlens(&["changes", "--config", config, "--key", &key]);
    assert!(ok, "{stderr}");
    let line = format!(
        "status: {} → {}",
        modify["dynamodb"]["OldImage"]["status"]["S"]
            .as_str()
            .unwrap(),
        modify["dynamodb"]["NewImage"]["status"]["S"]
            .as_str()
            .unwrap()
    );
    assert!(table.contains(&line), "{table} lacks {line}");
    assert_eq!(table.lines().count(), want.len() + 1, "{table}");

    let (ok, page, stderr) = streamlens(&["changes", "--config", config, "--limit", "3"]);
    assert!(ok, "{stderr}");
    let cursor = page
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("(more: --after '"))
        .and_then(|l| l.strip_suffix("')"))
        .unwrap_or_else(|| panic!("no cursor in {page}"));
    let (ok, next, stderr) = streamlens(&[
        "changes", "--config", config, "--limit", "3", "--after", cursor, "--format", "ndjson",
    ]);
    assert!(ok, "{stderr}");
    let (ok, six, stderr) = streamlens(&[
        "changes", "--config", config, "--limit", "6", "--format", "ndjson",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        next.lines().collect::<Vec<_>>(),
        six.lines().skip(3).collect::<Vec<_>>()
    );

    let (ok, _, stderr) = streamlens(&["changes", "--config", config, "--kind", "UPSERT"]);
    assert!(!ok);
    assert!(
        stderr.contains("bad query: `kinds`: unknown kind `UPSERT`"),
        "{stderr}"
    );
}
