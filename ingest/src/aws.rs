//! AWS SDK configuration shared by every AWS client streamlens makes.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// Loads the SDK configuration: the default chain, with an explicit region and endpoint when
/// given. With an endpoint (a local moto server) and no credentials in the environment, dummy
/// static credentials are used so the SDK does not probe instance metadata.
pub async fn sdk_config(region: Option<&str>, endpoint_url: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint_url {
        loader = loader.endpoint_url(endpoint);
        if region.is_none() {
            loader = loader.region(Region::new("us-east-1"));
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(Credentials::new(
                "streamlens-local",
                "streamlens-local",
                None,
                None,
                "streamlens-local-endpoint",
            ));
        }
    }
    loader.load().await
}
