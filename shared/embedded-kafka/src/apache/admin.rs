//! The admin API calls the project needs on a real broker.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::ApacheKafkaError;

/// Creates `topics` on the broker at `bootstrap` through the admin API,
/// `tenant-routes` compacted with one partition (its order is the order of
/// route changes); topics that exist already are fine.
pub fn create_topics(
    bootstrap: &str,
    topics: &[&str],
    partitions: i32,
) -> Result<(), ApacheKafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create()
        .map_err(|e| ApacheKafkaError::Topic {
            topic: topics.join(", "),
            reason: e.to_string(),
        })?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|&name| {
            if name == protocol::topics::TENANT_ROUTES {
                NewTopic::new(name, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact")
            } else {
                NewTopic::new(name, partitions, TopicReplication::Fixed(1))
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_lite::future::block_on(admin.create_topics(&new_topics, &options))
        .map_err(|e| ApacheKafkaError::Topic {
            topic: topics.join(", "),
            reason: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ApacheKafkaError::Topic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
