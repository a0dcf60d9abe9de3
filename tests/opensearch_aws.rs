//! Amazon OpenSearch Service: the domain endpoint found with `DescribeDomain` (against moto,
//! which implements the OpenSearch control plane), and requests signed with SigV4 (seen by a
//! proxy in front of osmem-server, which itself ignores authentication).

mod common;

use std::sync::{Arc, Mutex};

use streamlens_aggregator::{
    config::{OpenSearchAuth, OpenSearchStoreConfig},
    store::{aws::domain_endpoint, opensearch::OpenSearchStore},
    Store,
};
use streamlens_core::AggregateDoc;
use streamlens_infra::fault_proxy::{Fault, FaultProxy};

#[tokio::test]
async fn a_domain_endpoint_is_found_by_name() {
    let moto = common::moto_url();
    common::require("moto", &moto).await;
    let sdk = streamlens_ingest::aws::sdk_config(Some("us-east-1"), Some(&moto)).await;
    let name = common::unique("orders-");
    let created = aws_sdk_opensearch::Client::new(&sdk)
        .create_domain()
        .domain_name(&name)
        .send()
        .await
        .unwrap();
    let endpoint = created
        .domain_status()
        .and_then(|s| s.endpoint())
        .expect("moto gives the domain an endpoint")
        .to_owned();
    assert_eq!(
        domain_endpoint(&sdk, &name).await.unwrap(),
        format!("https://{endpoint}")
    );

    let err = domain_endpoint(&sdk, "no-such-domain").await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("store.domain `no-such-domain`") && message.contains("not found"),
        "{message}"
    );

    // A config with both a URL and a domain is refused before anything is asked.
    let both = OpenSearchStoreConfig {
        domain: Some(name),
        endpoint_url: Some(moto),
        ..OpenSearchStoreConfig::new("http://127.0.0.1:9200")
    };
    let err = OpenSearchStore::connect(&both).await.err().unwrap();
    assert!(err.to_string().contains("give one"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_signed_with_sigv4() {
    let url = common::opensearch_url();
    common::require("OpenSearch", &url).await;
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = seen.clone();
    let proxy = FaultProxy::start(&url, move |call| {
        record.lock().unwrap().push(call.authorization.clone());
        Fault::Forward
    })
    .await;
    let prefix = common::unique("sigv4-");
    let config = OpenSearchStoreConfig {
        index_prefix: prefix.clone(),
        auth: Some(OpenSearchAuth::AwsSigv4),
        region: Some("eu-west-1".into()),
        // The local stand-in credentials (no AWS here): what `endpoint_url` gives.
        endpoint_url: Some(common::moto_url()),
        ..OpenSearchStoreConfig::new(proxy.url())
    };
    let store = OpenSearchStore::connect(&config).await.unwrap();
    let doc = AggregateDoc {
        pipeline: "p".into(),
        window: "1m".into(),
        window_end: 60_000,
        dimension: "_all".into(),
        value: "_all".into(),
        version: 1,
        ..AggregateDoc::default()
    };
    store.write(&[doc], None).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    for authorization in &seen {
        let authorization = authorization.as_deref().unwrap_or_default();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=streamlens-local/")
                && authorization.contains("/eu-west-1/es/aws4_request"),
            "{authorization}"
        );
    }
    let _ = reqwest::Client::new()
        .delete(format!("{url}/{prefix}*"))
        .send()
        .await;
}
