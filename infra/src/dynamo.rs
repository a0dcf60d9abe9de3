//! Creates DynamoDB tables with streams.

use aws_sdk_dynamodb::{
    types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        StreamSpecification, StreamViewType,
    },
    Client,
};

use crate::Error;

/// Creates `table` with a string partition key `key` and a NEW_AND_OLD_IMAGES stream, and returns
/// the stream ARN. An existing table is kept; its stream is enabled if it has none.
pub async fn create_table_with_stream(
    client: &Client,
    table: &str,
    key: &str,
) -> Result<String, Error> {
    let aws = |operation: &'static str| {
        move |e: String| Error::Aws {
            operation,
            message: e,
        }
    };
    let created = client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| aws("CreateTable")(e.to_string()))?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| aws("CreateTable")(e.to_string()))?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(|e| aws("CreateTable")(e.to_string()))?,
        )
        .send()
        .await;
    if let Err(e) = created {
        let exists = e
            .as_service_error()
            .is_some_and(|s| s.is_resource_in_use_exception());
        if !exists {
            return Err(aws("CreateTable")(format!("{e:?}")));
        }
        tracing::info!(table, "table exists already");
    }
    for _ in 0..100 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| aws("DescribeTable")(format!("{e:?}")))?;
        let Some(t) = described.table() else { continue };
        let active = t.table_status().is_some_and(|s| s.as_str() == "ACTIVE");
        if active {
            if let Some(arn) = t.latest_stream_arn() {
                if t.stream_specification().is_some_and(|s| s.stream_enabled()) {
                    return Ok(arn.to_owned());
                }
            }
            client
                .update_table()
                .table_name(table)
                .stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(true)
                        .stream_view_type(StreamViewType::NewAndOldImages)
                        .build()
                        .map_err(|e| aws("UpdateTable")(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| aws("UpdateTable")(format!("{e:?}")))?;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(aws("DescribeTable")(format!(
        "table `{table}` did not become active with a stream"
    )))
}
