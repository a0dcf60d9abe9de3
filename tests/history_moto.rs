//! Item forensics against the writes themselves: a moto table's item is put, updated, put over,
//! deleted and put again with the AWS SDK, a little over a second apart (DynamoDB stamps changes to
//! the second); after each write the test reads the item back with `GetItem`. streamlens reads the
//! stream into its change index, and `streamlens history <key> --at T` must give, for a time T
//! between each write and the next, exactly the item `GetItem` returned after the earlier one —
//! or no item while it was deleted and before it was first written.

mod common;

use std::{collections::BTreeMap, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue as Sdk;
use tokio_util::sync::CancellationToken;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An SDK item as the DynamoDB JSON streamlens keeps (S and N are all this test writes).
fn plain(item: &std::collections::HashMap<String, Sdk>) -> serde_json::Value {
    let map: BTreeMap<String, serde_json::Value> = item
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Sdk::S(s) => serde_json::json!({ "S": s }),
                Sdk::N(n) => serde_json::json!({ "N": n }),
                other => panic!("unexpected {other:?}"),
            };
            (k.clone(), value)
        })
        .collect();
    serde_json::to_value(map).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reconstructs_the_item_at_any_time() {
    common::require("moto", &common::moto_url()).await;
    let client = common::dynamodb().await;
    let table = common::unique("history");
    streamlens_infra::dynamo::create_table_with_stream(&client, &table, "pk")
        .await
        .unwrap();
    let key = || Sdk::S("order#7".to_owned());
    let read = |client: aws_sdk_dynamodb::Client, table: String| async move {
        client
            .get_item()
            .table_name(table)
            .key("pk", Sdk::S("order#7".to_owned()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .map(|i| plain(&i))
    };
    // (time before the write, the item after it)
    let mut writes: Vec<(i64, Option<serde_json::Value>)> = Vec::new();
    let started = now_ms();
    for step in 0..6 {
        if step > 0 {
            tokio::time::sleep(Duration::from_millis(1_200)).await;
        }
        let before = now_ms();
        match step {
            0 => {
                client
                    .put_item()
                    .table_name(&table)
                    .item("pk", key())
                    .item("status", Sdk::S("new".into()))
                    .item("amount", Sdk::N("10.50".into()))
                    .send()
                    .await
                    .unwrap();
            }
            1 => {
                client
                    .update_item()
                    .table_name(&table)
                    .key("pk", key())
                    .update_expression("SET #s = :s, note = :n")
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_values(":s", Sdk::S("paid".into()))
                    .expression_attribute_values(":n", Sdk::S("card".into()))
                    .send()
                    .await
                    .unwrap();
            }
            2 => {
                client
                    .put_item()
                    .table_name(&table)
                    .item("pk", key())
                    .item("status", Sdk::S("shipped".into()))
                    .item("amount", Sdk::N("12".into()))
                    .send()
                    .await
                    .unwrap();
            }
            3 => {
                client
                    .delete_item()
                    .table_name(&table)
                    .key("pk", key())
                    .send()
                    .await
                    .unwrap();
            }
            4 => {
                client
                    .put_item()
                    .table_name(&table)
                    .item("pk", key())
                    .item("status", Sdk::S("reopened".into()))
                    .item("amount", Sdk::N("1".into()))
                    .send()
                    .await
                    .unwrap();
            }
            _ => {
                client
                    .update_item()
                    .table_name(&table)
                    .key("pk", key())
                    .update_expression("REMOVE amount")
                    .send()
                    .await
                    .unwrap();
            }
        }
        writes.push((before, read(client.clone(), table.clone()).await));
    }

    let dir = tempfile::tempdir().unwrap();
    let config_text = format!(
        "data_dir = \"{dir}\"\n[source]\nkind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{url}\"\n\
         region = \"us-east-1\"\nstop_when_idle = \"1s\"\n[store]\nkind = \"embedded\"\npath = \"{dir}/s.redb\"\n\
         [pipeline]\nname = \"orders\"\ndimensions = [\"status\"]\n[dashboard]\nenabled = false\n",
        dir = dir.path().display(),
        url = common::moto_url()
    );
    let config_path = dir.path().join("h.toml");
    std::fs::write(&config_path, &config_text).unwrap();
    let config = streamlens::config::Config::parse(&config_text, "h.toml").unwrap();
    let summary = streamlens::app::run(config, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.source.events, 6, "{summary:?}");

    let history = |at: i64| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamlens"))
            .args([
                "history",
                "pk=order#7",
                "--format",
                "json",
                "--at",
                &at.to_string(),
                "--config",
            ])
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Before the first write: no item.
    let first = history(started / 1000 * 1000 - 1);
    assert_eq!(first["exists"], false, "{first}");
    assert_eq!(first["changes"].as_array().unwrap().len(), 6);
    for (i, (_, after)) in writes.iter().enumerate() {
        // Just before the second the next write was stamped in: only writes up to i count.
        let at = match writes.get(i + 1) {
            Some((next_before, _)) => next_before / 1000 * 1000 - 1,
            None => now_ms(),
        };
        let got = history(at);
        assert_eq!(
            got["state"],
            after.clone().unwrap_or(serde_json::Value::Null),
            "after write {i}, at {at}: {got}"
        );
        assert_eq!(got["exists"], after.is_some(), "after write {i}");
    }
    let now = history(now_ms());
    let kinds: Vec<&str> = now["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["INSERT", "MODIFY", "MODIFY", "REMOVE", "INSERT", "MODIFY"]
    );
}
