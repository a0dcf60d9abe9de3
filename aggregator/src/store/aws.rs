//! Amazon OpenSearch Service: a domain's endpoint found from its name, and request signing.
//!
//! With `store.domain`, the store asks the OpenSearch control plane (`DescribeDomain`, through
//! `aws-sdk-opensearch`) for the domain's endpoint — the public one, or the VPC one for a domain
//! in a VPC — instead of needing its URL in the config. Requests are then signed with AWS
//! Signature Version 4 (service `es`) using the usual AWS credentials (environment, profile,
//! instance or task role), which is what a domain with IAM access control requires.

use aws_config::SdkConfig;

use crate::Error;

/// The `https://` URL of a domain's endpoint.
pub async fn domain_endpoint(sdk: &SdkConfig, domain: &str) -> Result<String, Error> {
    let client = aws_sdk_opensearch::Client::new(sdk);
    let output = client
        .describe_domain()
        .domain_name(domain)
        .send()
        .await
        .map_err(|e| {
            Error::StoreConfig(format!(
                "store.domain `{domain}`: DescribeDomain failed: {}",
                aws_sdk_opensearch::error::DisplayErrorContext(&e)
            ))
        })?;
    let status = output
        .domain_status()
        .ok_or_else(|| Error::StoreConfig(format!("store.domain `{domain}`: no domain status")))?;
    let endpoint = status
        .endpoint()
        .map(str::to_owned)
        .or_else(|| status.endpoints().and_then(|e| e.get("vpc").cloned()))
        .ok_or_else(|| {
            Error::StoreConfig(format!(
                "store.domain `{domain}` has no endpoint yet (is it still being created?)"
            ))
        })?;
    Ok(
        if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
            endpoint
        } else {
            format!("https://{endpoint}")
        },
    )
}
