//! The fast decoder against the serde decoder: same change for every line, rejection for every
//! line serde rejects.

use std::{collections::BTreeMap, io::Read};

use proptest::prelude::*;
use streamlens_core::{
    event::{StreamRecordBody, UserIdentity},
    projection::{ProjectedChange, Projection, ScalarKind},
    AttributeValue, StreamRecord,
};

use super::fast::*;
use crate::archive::{
    decode_line,
    fast::{digit_run, valid_base64},
};

/// The serde decoder; a panic in it (`parse_creation_time` overflows on huge integer times, in
/// debug builds) counts as a rejection.
fn slow(line: &str, projection: &CompiledProjection) -> Result<ProjectedChange, String> {
    std::panic::catch_unwind(|| decode_line(line, String::new))
        .map_err(|_| "panicked".to_owned())?
        .map(|e| ProjectedChange::from_event(&e, projection.projection()))
        .map_err(|q| q.reason)
}

/// Checks one line both ways; true when the fast path decoded it by itself. The line is decoded
/// twice with one cache, so that the second time it goes through the shape learned the first
/// time, and once by the full scan alone.
fn check(line: &str, projection: &CompiledProjection) -> bool {
    let mut cache = DecodeCache::default();
    let expected = slow(line, projection);
    let fast = check_with(line, projection, &mut cache, &expected);
    let shaped = cache.shapes() > 0;
    let again = check_with(line, projection, &mut cache, &expected);
    assert_eq!(fast, again, "{line}");
    if shaped {
        assert!(
            cache.fitted() > 0,
            "a learned shape did not fit its own line: {line}"
        );
    }
    let scanned = decode_projected_scan(line.as_bytes(), projection, &mut DecodeCache::default());
    assert_eq!(scanned.is_some(), fast, "{line}");
    fast
}

/// Checks one line both ways with `cache` (which may hold shapes of other lines).
fn check_with(
    line: &str,
    projection: &CompiledProjection,
    cache: &mut DecodeCache,
    expected: &Result<ProjectedChange, String>,
) -> bool {
    let got = decode_projected(line.as_bytes(), projection, cache);
    match (expected, &got) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{line}"),
        (Err(_), Err(_)) => {}
        _ => panic!("serde says {expected:?}, decode_projected says {got:?}: {line}"),
    }
    // As a view of the line, with the same shapes learned (a copy of the cache: the counts
    // the tests check stay those of `decode_projected`).
    let mut images = LineImages::default();
    let viewed = decode_view(
        line.as_bytes(),
        projection,
        &mut cache.clone(),
        &mut images,
        |view| view.to_change(),
    );
    match (expected, &viewed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "view: {line}"),
        (Err(_), Err(_)) => {}
        _ => panic!("serde says {expected:?}, decode_view says {viewed:?}: {line}"),
    }
    let fast = decode_projected_fast(line.as_bytes(), projection, cache);
    if let Some(fast) = &fast {
        assert_eq!(Ok(fast), expected.as_ref(), "fast path: {line}");
    }
    fast.is_some()
}

fn projection() -> CompiledProjection {
    CompiledProjection::new(&Projection::new([
        "status", "region", "amount", "items", "a", "a.b", "a.b.c", "é", "x.y", "t", "missing",
        "q\"k",
    ]))
}

fn record(body: &str) -> String {
    format!(
        r#"{{"eventID":"1","eventName":"MODIFY","dynamodb":{{"ApproximateCreationDateTime":1700000000,"Keys":{{"pk":{{"S":"k"}}}},{body},"SequenceNumber":"42"}},"shardId":"s-1"}}"#
    )
}

#[test]
fn the_shipped_sample_decodes_the_same_on_the_fast_path() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/sample/orders.ndjson.gz"
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let p = projection();
    let mut n = 0;
    for line in text.lines() {
        assert!(check(line, &p), "fast path gave up on {line}");
        n += 1;
    }
    assert_eq!(n, 3000);
}

#[test]
fn attribute_values_of_every_type_are_projected_like_serde() {
    let p = projection();
    let images = [
        r#""NewImage":{"status":{"S":"a\"b\\c\/d\n\u00e9\ud83d\ude00"},"region":{"S":"é€"}}"#,
        r#""NewImage":{"amount":{"N":"-0.5"},"items":{"N":"1E+3"},"t":{"NULL":false}}"#,
        r#""NewImage":{"a":{"B":"AQID"},"status":{"BOOL":true},"region":{"BOOL":false}}"#,
        r#""NewImage":{"a":{"BS":["AQ==","Ag==",""]},"t":{"NULL":true}}"#,
        r#""NewImage":{"a":{"SS":["x","y\"z"]},"items":{"NS":["1","2.5"]}}"#,
        r#""NewImage":{"a":{"L":[{"S":"x"},{"N":"1"},{"M":{"k":{"BOOL":true}}}]}}"#,
        r#""NewImage":{"a":{"M":{"z":{"S":"1"},"b":{"M":{"c":{"N":"7"},"d":{"S":"\u0041"}}}}}}"#,
        r#""NewImage":{"a":{"M":{"b":{"S":"first"}}},"a":{"M":{"c":{"S":"no b"}}}}"#,
        r#""NewImage":{"a":{"M":{"b":{"S":"x"},"b":{"N":"2"}}}}"#,
        r#""NewImage":{"a":{"S":"flat"},"x.y":{"S":"dotted names are not paths"}}"#,
        r#""NewImage":{"x":{"M":{"y":{"S":"nested"}}},"é":{"N":"1"},"q\"k":{"S":"quoted"}}"#,
        r#""NewImage":{"\u00e9":{"N":"2"},"st\u0061tus":{"S":"escaped name"}}"#,
        r#""NewImage":{"a":{"M":{}},"status":{"S":""}}"#,
        r#""NewImage":{"a":{"L":[]},"region":{"SS":[]}}"#,
        r#""NewImage":{"a":{"B":"\/w=="}}"#,
        r#""NewImage":{},"OldImage":{"status":{"S":"old"}}"#,
        r#""NewImage":null,"OldImage":null"#,
        r#""OldImage":{"a":{"M":{"b":{"M":{"c":{"NS":["1"]}}}}}}"#,
    ];
    for image in images {
        let line = record(image);
        assert!(check(&line, &p), "fast path gave up on {line}");
        let change = decode_projected(line.as_bytes(), &p, &mut DecodeCache::default()).unwrap();
        assert_eq!(&*change.shard_id, "s-1");
    }
    let line = record(images[0]);
    let change = decode_projected(line.as_bytes(), &p, &mut DecodeCache::default()).unwrap();
    let new = change.new.unwrap();
    assert_eq!(new[0].as_ref().unwrap().text.as_str(), "a\"b\\c/d\né😀");
    let line = record(images[5]);
    let change = decode_projected(line.as_bytes(), &p, &mut DecodeCache::default()).unwrap();
    let a = change.new.unwrap()[4].clone().unwrap();
    assert_eq!(a.kind, ScalarKind::Other);
    assert_eq!(
        &*a.text,
        r#"{"L":[{"S":"x"},{"N":"1"},{"M":{"k":{"BOOL":true}}}]}"#
    );
}

#[test]
fn times_follow_parse_creation_time() {
    let p = projection();
    for (time, fast) in [
        ("1700000000", true),
        ("0", true),
        ("-0.5", true),
        ("-5", true),
        ("1E+3", true),
        ("1e3", true),
        ("1700000000.5", true),
        ("1700000000.0004", true),
        ("1.7e9", true),
        ("1234567890123456", true),
        // Out of range for epoch milliseconds: both paths refuse it, with the exact path's words.
        ("17000000000000000000000", false),
        ("1e400", false),
        (r#""2024-02-29T23:59:58.5Z""#, true),
        (r#""2024-02-29T23:59:58Z""#, true),
        (r#""2024-02-29T23:59:58.123456""#, true),
        (r#""2024-02-29""#, false),
        (r#""yesterday""#, false),
        (r#""""#, false),
        ("null", false),
        ("true", false),
        ("[1]", false),
        ("{}", false),
    ] {
        let line = format!(
            r#"{{"eventID":"1","eventName":"INSERT","dynamodb":{{"ApproximateCreationDateTime":{time},"SequenceNumber":"1"}}}}"#
        );
        assert_eq!(check(&line, &p), fast, "{line}");
    }
}

#[test]
fn field_order_whitespace_and_unknown_fields_do_not_matter() {
    let p = projection();
    let lines = [
        r#"{"shardId":"s","dynamodb":{"SequenceNumber":"9","NewImage":{"status":{"S":"x"}},"ApproximateCreationDateTime":1},"eventName":"INSERT","eventID":"e"}"#,
        r#" { "eventID" : "e" , "eventName" : "REMOVE" , "dynamodb" : { "ApproximateCreationDateTime" : 1 , "OldImage" : { "status" : { "S" : "x" } , "a" : { "L" : [ { "N" : "1" } , { "NULL" : true } ] } } , "SequenceNumber" : "9" , "SizeBytes" : 12 } }  "#,
        r#"{"eventID":"e","eventName":"INSERT","extra":{"deep":[1,-2.5e-3,true,false,null,"\u20ac",{"k":[]}]},"dynamodb":{"ApproximateCreationDateTime":1,"SequenceNumber":"9","Other":[{}],"StreamViewType":null},"awsRegion":"eu-west-1","eventSource":null,"eventVersion":"1.1"}"#,
        r#"{"eventID":"e","eventName":"FUTURE_KIND","dynamodb":{"ApproximateCreationDateTime":1,"SequenceNumber":"9","SizeBytes":0}}"#,
        r#"{"eventID":"e","eventName":"REMOVE","dynamodb":{"ApproximateCreationDateTime":1,"SequenceNumber":"9"},"userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"}}"#,
        r#"{"eventID":"e","eventName":"REMOVE","dynamodb":{"ApproximateCreationDateTime":1,"SequenceNumber":"9"},"userIdentity":{"principalId":"someone","type":"User","more":1}}"#,
        r#"{"eventID":"e","eventName":"REMOVE","dynamodb":{"ApproximateCreationDateTime":1,"SequenceNumber":"9"},"userIdentity":null,"shardId":null}"#,
        r#"{"eventID":"e","eventName":"INS\u0045RT","dynamodb":{"ApproximateCreationDateTime":1,"SequenceNumber":"\u0039"},"shardId":"sh\u00e9"}"#,
        // Names that begin like known fields (the first eight bytes pick a candidate, the whole
        // name must still match) and a short known name last on the line.
        r#"{"eventIDs":"x","eventID":"e","eventNameX":1,"eventName":"INSERT","dynamodbb":{},"dynamodb":{"Keys2":[],"Keys":{},"ApproximateCreationDateTimeX":"no","ApproximateCreationDateTime":1,"SequenceNumber":"9","NewImageX":null},"shardI":"t","shardId":"s"}"#,
        r#"{"eventName":"INSERT","dynamodb":{"SequenceNumber":"9","ApproximateCreationDateTime":1},"eventID":"e"}"#,
    ];
    for line in lines {
        assert!(check(line, &p), "fast path gave up on {line}");
    }
    let ttl = decode_projected(lines[4].as_bytes(), &p, &mut DecodeCache::default()).unwrap();
    assert!(ttl.ttl_delete);
}

#[test]
fn lines_serde_rejects_are_rejected() {
    let p = projection();
    let bad = [
        "",
        "{",
        "{}",
        "[]",
        "null",
        "{not json",
        r#"{"eventID":"1"}"#,
        &record(r#""NewImage":{"a":{"S":"x"}}"#)
            .replace(r#""SequenceNumber":"42""#, r#""SequenceNumber":42"#),
        &record(r#""NewImage":{"a":{"S":"x"}}"#).replace(r#","SequenceNumber":"42""#, ""),
        &record(r#""NewImage":{"a":{"S":"x"}}"#).replace(r#""eventID":"1""#, r#""eventID":"""#),
        &record(r#""NewImage":{"a":{"S":"x"}}"#).replace(r#""eventID":"1""#, r#""eventID":null"#),
        &record(r#""NewImage":{"a":{"S":"x"}}"#).replace(
            r#""eventName":"MODIFY""#,
            r#""eventName":"A","eventName":"B""#,
        ),
        &record(r#""NewImage":{"a":{"S":"x"}}"#).replace(r#""shardId":"s-1""#, r#""shardId":1"#),
        &format!("{} x", record(r#""NewImage":{"a":{"S":"x"}}"#)),
        &format!("{},", record(r#""NewImage":{"a":{"S":"x"}}"#)),
        &record(r#""NewImage":{"a":{"S":"x","N":"1"}}"#),
        &record(r#""NewImage":{"a":{"X":"1"}}"#),
        &record(r#""NewImage":{"a":{}}"#),
        &record(r#""NewImage":{"a":{"S":null}}"#),
        &record(r#""NewImage":{"a":{"S":1}}"#),
        &record(r#""NewImage":{"a":{"N":1.5}}"#),
        &record(r#""NewImage":{"a":{"BOOL":"true"}}"#),
        &record(r#""NewImage":{"a":{"NULL":null}}"#),
        &record(r#""NewImage":{"a":{"B":"AQI"}}"#),
        &record(r#""NewImage":{"a":{"B":"AQJ="}}"#),
        &record(r#""NewImage":{"a":{"B":"A==="}}"#),
        &record(r#""NewImage":{"a":{"B":"AQ-_"}}"#),
        &record(r#""NewImage":{"a":{"BS":["AQ==","%%"]}}"#),
        &record(r#""NewImage":{"a":{"SS":["x",1]}}"#),
        &record(r#""NewImage":{"a":{"L":[{"S":"x"},"y"]}}"#),
        &record(r#""NewImage":{"a":{"M":[]}}"#),
        &record(r#""NewImage":{"a":{"L":{}}}"#),
        &record(r#""NewImage":{"a":"plain"}"#),
        &record(r#""NewImage":{"a":{"S":"lone \ud800 surrogate"}}"#),
        &record(r#""NewImage":{"a":{"S":"lone \udc00 surrogate"}}"#),
        &record(r#""NewImage":{"unprojected":{"S":"\ud800\u0041"}}"#),
        &record(r#""NewImage":{"unprojected":{"S":"\ud800\ud800"}}"#),
        &record(r#""NewImage":{"unprojected":{"S":"\ud800"}}"#),
        &record(r#""NewImage":{"a":{"S":"bad \x escape"}}"#),
        &record(r#""NewImage":{"a":{"S":"bad \u12 escape"}}"#),
        &record("\"NewImage\":{\"a\":{\"S\":\"raw\ttab\"}}"),
        &record(r#""NewImage":[]"#),
        &record(r#""NewImage":{"a":{"S":"x"}},"NewImage":null"#),
        &record(r#""Keys":null"#),
        &record(r#""SizeBytes":-1"#),
        &record(r#""SizeBytes":1.5"#),
        &record(r#""SizeBytes":1e2"#),
        &record(r#""SizeBytes":99999999999999999999999"#),
        &record(r#""StreamViewType":5"#),
        &record(r#""Unknown":01"#),
        &record(r#""Unknown":1."#),
        &record(r#""Unknown":-"#),
        &record(r#""Unknown":tru"#),
        &record(r#""Unknown":[1,]"#),
        &record(r#""Unknown":{"a":1,}"#),
        &record(r#""Unknown":"\q""#),
        &record(r#""NewImage":{"a":{"L":[{"N":"1"}]}},"Unknown":{"k":1 "j":2}"#),
        &format!(
            r#"{{"eventID":"1","eventName":"REMOVE","dynamodb":{{"ApproximateCreationDateTime":1,"SequenceNumber":"9"}},"userIdentity":{}}}"#,
            r#"{"type":"Service"}"#
        ),
        &format!(
            r#"{{"eventID":"1","eventName":"REMOVE","dynamodb":{{"ApproximateCreationDateTime":1,"SequenceNumber":"9"}},"userIdentity":{}}}"#,
            r#""dynamodb.amazonaws.com""#
        ),
    ];
    for line in bad {
        let got = decode_projected(line.as_bytes(), &p, &mut DecodeCache::default());
        assert!(got.is_err(), "accepted {line}: {got:?}");
        assert!(!check(line, &p), "fast path accepted {line}");
    }
    let err = decode_projected(b"{not json", &p, &mut DecodeCache::default()).unwrap_err();
    assert!(err.contains("invalid json"), "{err}");
    let err = decode_projected(b"{\"a\":\"\xff\"}", &p, &mut DecodeCache::default()).unwrap_err();
    assert!(err.contains("UTF-8"), "{err}");
}

#[test]
fn unusual_shapes_serde_accepts_are_left_to_serde() {
    let p = projection();
    // A struct may be written as an array of its fields in order; tabs are whitespace; escaped
    // field names are field names.
    let lines = [
        r#"["e","INSERT",null,null,null,[1,{},{"status":{"S":"x"}},null,"9",0,null],null,"s"]"#,
        "{\"eventID\":\t\"e\",\"eventName\":\"INSERT\",\"dynamodb\":{\"ApproximateCreationDateTime\":1,\"SequenceNumber\":\"9\"}}\r",
        r#"{"event\u0049D":"e","eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1,"SequenceNumber":"9"}}"#,
        r#"{"eventID":"e","eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1,"SequenceNumber":"9","NewImage":{"a":{"\u0053":"x"}}}}"#,
        r#"{"eventID":"e","eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1,"SequenceNumber":"9"},"x":"lone \ud800 in a skipped value"}"#,
    ];
    for line in lines {
        assert!(slow(line, &p).is_ok(), "{line}");
        assert!(!check(line, &p), "{line}");
    }
    // Nesting beyond serde_json's limit is an error; a bit less is fine.
    for depth in [50, 200] {
        let nested = format!(
            "{}{{\"S\":\"x\"}}{}",
            r#"{"L":["#.repeat(depth),
            "]}".repeat(depth)
        );
        check(&record(&format!(r#""NewImage":{{"a":{nested}}}"#)), &p);
    }
}

#[test]
fn a_line_with_a_non_ascii_time_fraction_is_rejected_by_name() {
    // `parse_iso8601_ms` once sliced the fraction at byte 3, inside the `é`, and panicked.
    let line = r#"{"eventID":"1","eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":"2024-01-01T00:00:00.aaé","SequenceNumber":"1"}}"#;
    let err = decode_projected(line.as_bytes(), &projection(), &mut DecodeCache::default());
    let err = err.unwrap_err();
    assert!(err.contains("ApproximateCreationDateTime"), "{err}");
}

#[test]
fn base64_validation_matches_the_base64_crate() {
    use base64::{engine::general_purpose::STANDARD, Engine};
    let mut cases: Vec<String> = [
        "", "A", "AA", "AA=", "AA==", "AB==", "AAA=", "AAB=", "AAAA", "=", "====",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for bytes in 0..40u8 {
        let data: Vec<u8> = (0..bytes).map(|i| i.wrapping_mul(37)).collect();
        cases.push(STANDARD.encode(&data));
    }
    for case in cases {
        assert_eq!(
            valid_base64(case.as_bytes()),
            STANDARD.decode(&case).is_ok(),
            "{case:?}"
        );
    }
}

#[test]
fn shards_are_interned() {
    let mut shards = DecodeCache::default();
    let a = shards.intern("shard-a");
    for i in 0..20 {
        shards.intern(&format!("other-{i}"));
    }
    let again = shards.intern("shard-a");
    assert!(std::sync::Arc::ptr_eq(&a, &again));
}

#[test]
fn lines_of_a_learned_shape_fit_it_and_decode_the_same() {
    let p = projection();
    let line = |id: &str,
                seq: &str,
                time: &str,
                status: &str,
                amount: &str,
                t: bool,
                shard: &str| {
        format!(
            r#"{{"eventID":"{id}","eventName":"MODIFY","eventVersion":"1.1","dynamodb":{{"ApproximateCreationDateTime":{time},"Keys":{{"pk":{{"S":"{id}"}},"bin":{{"B":"AAE="}}}},"NewImage":{{"status":{{"S":"{status}"}},"amount":{{"N":"{amount}"}},"t":{{"BOOL":{t}}},"other":{{"NS":["1"]}}}},"OldImage":{{"status":{{"S":"old"}}}},"SequenceNumber":"{seq}","SizeBytes":12,"StreamViewType":"NEW_AND_OLD_IMAGES"}},"shardId":"{shard}"}}"#
        )
    };
    let mut cache = DecodeCache::default();
    let lines = [
        line("a1", "100", "1700000000", "paid", "1.5", true, "s-1"),
        // Other values in every hole, escapes and non-ASCII text included.
        line(
            "b2",
            "101",
            "1700000060",
            r#"sh\u00e9 \\ \"q\""#,
            "-2E+3",
            true,
            "s-1",
        ),
        line(
            "c3",
            "102",
            r#""2024-01-02T03:04:05.678Z""#,
            "é😀",
            "0",
            true,
            "s-2",
        ),
    ];
    for l in &lines {
        let expected = slow(l, &p);
        assert!(expected.is_ok(), "{l}");
        assert!(check_with(l, &p, &mut cache, &expected), "{l}");
    }
    // The first line was learned; the others fitted its shape (each is decoded twice), except
    // the third, whose time is a string: a second shape, fitted the second time.
    assert_eq!(cache.shapes(), 2);
    assert_eq!(cache.fitted(), 1 + 2 + 1);

    // What the shape does not cover goes to the full scan and to serde, and is judged the same:
    // an empty event id, a time with a fraction, a size that does not fit, bad base64, a bad
    // escape, a truncated line, a stray comma, a number where a boolean was.
    let good = line("d4", "103", "1700000000", "x", "1", true, "s-1");
    let bad = [
        good.replace(r#""eventID":"d4""#, r#""eventID":"""#),
        good.replace("1700000000", "1700000000.5"),
        good.replace(
            r#""SizeBytes":12"#,
            r#""SizeBytes":123456789012345678901234"#,
        ),
        good.replace("AAE=", "AAE"),
        good.replace(r#""S":"x""#, r#""S":"\x""#),
        good[..good.len() - 1].to_owned(),
        good.replace(r#""SizeBytes":12,"#, r#""SizeBytes":12,,"#),
        good.replace(r#""t":{"BOOL":true}"#, r#""t":{"BOOL":1}"#),
    ];
    let fitted = cache.fitted();
    for l in &bad {
        assert_ne!(l, &good);
        let expected = slow(l, &p);
        check_with(l, &p, &mut cache, &expected);
    }
    assert_eq!(
        cache.fitted(),
        fitted,
        "a line the shape does not cover fitted it"
    );
    let expected = slow(&good, &p);
    assert!(check_with(&good, &p, &mut cache, &expected));
    assert_eq!(cache.fitted(), fitted + 2);

    // A repeated projected name that clears a value is not learned; its lines still decode.
    let repeated = record(r#""NewImage":{"a":{"M":{"b":{"S":"1"}}},"a":{"S":"2"}}"#);
    let mut cache = DecodeCache::default();
    assert!(check_with(&repeated, &p, &mut cache, &slow(&repeated, &p)));
    assert!(check_with(&repeated, &p, &mut cache, &slow(&repeated, &p)));
    assert_eq!((cache.shapes(), cache.fitted()), (0, 0));

    // Shapes belong to the projection they were learned with.
    let other = CompiledProjection::new(&Projection::new(["amount"]));
    let mut cache = DecodeCache::default();
    decode_projected(lines[0].as_bytes(), &p, &mut cache).unwrap();
    let expected = slow(&lines[1], &other);
    assert!(check_with(&lines[1], &other, &mut cache, &expected));
    assert_eq!(expected.unwrap().new.unwrap().len(), 1);
}

#[test]
fn lines_that_all_differ_rest_the_shapes_and_still_decode_the_same() {
    let p = projection();
    let mut cache = DecodeCache::default();
    // Every line has an attribute name of its own: no line fits another's shape.
    let line = |n: usize| {
        record(&format!(
            r#""NewImage":{{"status":{{"S":"s{n}"}},"only{n}":{{"N":"{n}"}}}}"#
        ))
    };
    for n in 0..300 {
        let l = line(n);
        assert_eq!(decode_projected(l.as_bytes(), &p, &mut cache), slow(&l, &p));
    }
    assert_eq!(cache.fitted(), 0);
    assert!(cache.shapes() <= 8);
    // After 64 misses in a row the shapes rest: even a line seen just before is scanned.
    for _ in 0..2 {
        let l = line(299);
        assert_eq!(decode_projected(l.as_bytes(), &p, &mut cache), slow(&l, &p));
    }
    assert_eq!(cache.fitted(), 0);
    // A line longer than 64 KB is decoded but not learned.
    let long = record(&format!(
        r#""NewImage":{{"status":{{"S":"{}"}}}}"#,
        "x".repeat(70_000)
    ));
    let mut cache = DecodeCache::default();
    assert!(check_with(&long, &p, &mut cache, &slow(&long, &p)));
    assert_eq!(cache.shapes(), 0);
}

// Random records, serialised by serde, compact and with spaces between tokens.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,6}",
        "\\PC{0,8}",
        any::<String>(),
        Just("a\"b\\c/\n\t\u{1}é😀".to_owned()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["status", "region", "amount", "a", "b", "c", "x", "y", "é", "t"]).prop_map(str::to_owned),
        1 => text(),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-0.5".to_owned()),
        Just("1E+3".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        text(),
    ]
}

fn attribute() -> impl Strategy<Value = AttributeValue> {
    let leaf = prop_oneof![
        text().prop_map(AttributeValue::S),
        number().prop_map(AttributeValue::N),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(AttributeValue::B),
        any::<bool>().prop_map(AttributeValue::Bool),
        any::<bool>().prop_map(AttributeValue::Null),
        prop::collection::vec(text(), 0..3).prop_map(AttributeValue::SS),
        prop::collection::vec(number(), 0..3).prop_map(AttributeValue::NS),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5), 0..3)
            .prop_map(AttributeValue::BS),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::btree_map(name(), inner.clone(), 0..4).prop_map(AttributeValue::M),
            prop::collection::vec(inner, 0..3).prop_map(AttributeValue::L),
        ]
    })
}

fn item() -> impl Strategy<Value = BTreeMap<String, AttributeValue>> {
    prop::collection::btree_map(name(), attribute(), 0..6)
}

fn time() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (0i64..4_000_000_000).prop_map(serde_json::Value::from),
        (-1e10f64..1e10).prop_map(serde_json::Value::from),
        (0i64..4_000_000_000_000).prop_map(|ms| {
            let secs = ms / 1000;
            let (days, rem) = (secs / 86_400, secs % 86_400);
            // A civil date from days since the epoch (Howard Hinnant's algorithm).
            let z = days + 719_468;
            let era = z / 146_097;
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            serde_json::Value::from(format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem / 60 % 60,
                rem % 60,
                ms % 1000
            ))
        }),
    ]
}

fn stream_record() -> impl Strategy<Value = StreamRecord> {
    (
        (
            "[a-z0-9]{1,8}",
            prop::sample::select(vec!["INSERT", "MODIFY", "REMOVE", "OTHER"]),
            prop::option::of("[0-9.]{1,4}"),
            prop::option::of("[a-z-]{1,10}"),
        ),
        (
            time(),
            item(),
            prop::option::of(item()),
            prop::option::of(item()),
            "[0-9]{1,30}",
            any::<u64>(),
            prop::option::of(prop::sample::select(vec![
                "NEW_IMAGE",
                "NEW_AND_OLD_IMAGES",
            ])),
        ),
        prop::option::of(prop::sample::select(vec![
            "dynamodb.amazonaws.com",
            "someone",
        ])),
        prop::option::of(text()),
    )
        .prop_map(
            |((id, name, version, region), (time, keys, new, old, seq, size, view), who, shard)| {
                StreamRecord {
                    event_id: id,
                    event_name: name.to_owned(),
                    event_version: version,
                    event_source: Some("aws:dynamodb".to_owned()),
                    aws_region: region,
                    dynamodb: StreamRecordBody {
                        approximate_creation_date_time: Some(time),
                        keys,
                        new_image: new,
                        old_image: old,
                        sequence_number: seq,
                        size_bytes: size,
                        stream_view_type: view.map(str::to_owned),
                    },
                    user_identity: who.map(|p| UserIdentity {
                        kind: "Service".to_owned(),
                        principal_id: p.to_owned(),
                    }),
                    shard_id: shard,
                }
            },
        )
}

/// serde_json's compact output with a space after every `:` and `,` and inside brackets.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        writer.write_all(if first { b" " } else { b" , " })
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        writer.write_all(if first { b" " } else { b" , " })
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b" : ")
    }
}

fn spaced(record: &StreamRecord) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    record.serialize(&mut ser).unwrap();
    String::from_utf8(out).unwrap()
}

use serde::Serialize;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The word-at-a-time count of leading digits agrees with a byte-by-byte one, whatever
    /// follows the digits (every byte value, at every offset within a word).
    #[test]
    fn leading_digits_are_counted_like_byte_by_byte(
        digits in "[0-9]{0,40}",
        rest in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let mut text = digits.into_bytes();
        text.extend(rest);
        let expected = text.iter().take_while(|c| c.is_ascii_digit()).count();
        prop_assert_eq!(digit_run(&text), expected);
    }

    #[test]
    fn random_records_decode_the_same(record in stream_record()) {
        let p = projection();
        let compact = serde_json::to_string(&record).unwrap();
        prop_assert!(check(&compact, &p), "fast path gave up on {}", compact);
        let spaced = spaced(&record);
        prop_assert!(check(&spaced, &p), "fast path gave up on {}", spaced);
    }

    #[test]
    fn damaged_records_are_judged_like_serde(
        record in stream_record(),
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(b"{}[]\":,\\ 0-.eaSNMLu\x01".to_vec()),
        cut in any::<bool>(),
    ) {
        let p = projection();
        let mut line = serde_json::to_string(&record).unwrap().into_bytes();
        let i = at.index(line.len());
        if cut {
            line.remove(i);
        } else {
            line.insert(i, byte);
        }
        if let Ok(line) = String::from_utf8(line) {
            check(&line, &p);
            // And with the undamaged line's shape learned: a damaged line that seems to fit it
            // must still be judged like serde.
            let mut cache = DecodeCache::default();
            decode_projected_fast(serde_json::to_string(&record).unwrap().as_bytes(), &p, &mut cache);
            check_with(&line, &p, &mut cache, &slow(&line, &p));
        }
    }

    #[test]
    fn records_with_other_values_in_a_learned_shape_decode_the_same(
        record in stream_record(),
        texts in prop::collection::vec(text(), 1..6),
        numbers in prop::collection::vec(number(), 1..6),
        id in "[a-z0-9]{0,8}",
        sequence in "[0-9]{1,30}",
        time in time(),
        size in any::<u64>(),
        shard in text(),
    ) {
        let p = projection();
        let mut cache = DecodeCache::default();
        let line = serde_json::to_string(&record).unwrap();
        let learned = decode_projected_fast(line.as_bytes(), &p, &mut cache).is_some();
        let mut other = record.clone();
        let mut at = 0;
        for item in [Some(&mut other.dynamodb.keys), other.dynamodb.new_image.as_mut(), other.dynamodb.old_image.as_mut()].into_iter().flatten() {
            revalue(item, &texts, &numbers, &mut at);
        }
        other.event_id = id;
        other.dynamodb.sequence_number = sequence;
        other.dynamodb.approximate_creation_date_time = Some(time);
        other.dynamodb.size_bytes = size;
        if other.shard_id.is_some() {
            other.shard_id = Some(shard);
        }
        let line = serde_json::to_string(&other).unwrap();
        check_with(&line, &p, &mut cache, &slow(&line, &p));
        prop_assert!(!learned || cache.shapes() <= 2);
    }
}

/// Gives every `S` and `N` value of an item (nested ones too) another value from the pools.
fn revalue(
    item: &mut BTreeMap<String, AttributeValue>,
    texts: &[String],
    numbers: &[String],
    at: &mut usize,
) {
    fn value(v: &mut AttributeValue, texts: &[String], numbers: &[String], at: &mut usize) {
        *at += 1;
        match v {
            AttributeValue::S(s) => *s = texts[*at % texts.len()].clone(),
            AttributeValue::N(n) => *n = numbers[*at % numbers.len()].clone(),
            AttributeValue::SS(l) => l
                .iter_mut()
                .for_each(|s| *s = texts[*at % texts.len()].clone()),
            AttributeValue::M(m) => m.values_mut().for_each(|v| value(v, texts, numbers, at)),
            AttributeValue::L(l) => l.iter_mut().for_each(|v| value(v, texts, numbers, at)),
            _ => {}
        }
    }
    for v in item.values_mut() {
        value(v, texts, numbers, at);
    }
}
