//! Deleting the consumer groups of a deleted tenant's variants.
//!
//! A group can only be deleted once it has no members, and a variant may
//! still be running when its tenant is deleted (it is stopped after its
//! tenant is routed back to the baseline). So [`GroupDeleter::delete`]
//! waits, bounded by `group_deletion.wait_ms`, for each group to empty,
//! deletes it, and retries transient failures. A group that still has
//! members when the answer is due is answered `pending` and retried in the
//! background for up to `group_deletion.retry_for_ms`; every final outcome
//! is logged and counted in `tenants_consumer_group_deletions_total{outcome}`.
//!
//! A broker that cannot describe groups (no ListGroups/DescribeGroups, as
//! the embedded broker) is never asked to delete one: its answer is
//! `unsupported`, whatever the broker is.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The `tenants.group_deletion` settings section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDeletionSettings {
    /// How long `DELETE /tenants/{id}` waits for a group to lose its
    /// members and be deleted before answering `pending`.
    #[serde(with = "settings::duration")]
    pub wait: Duration,
    /// How long a `pending` deletion keeps being retried in the background.
    #[serde(with = "settings::duration")]
    pub retry_for: Duration,
}

/// What became of one consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionOutcome {
    /// The broker deleted it.
    Deleted,
    /// There was no such group (the variant never committed an offset).
    Absent,
    /// It still had members when the answer was due; deletion goes on in
    /// the background.
    Pending,
    /// It still had members when the background retries ran out.
    MembersRemained,
    /// The broker cannot describe or delete consumer groups.
    Unsupported,
    /// The broker refused, or kept failing until the deadline.
    Failed,
}

impl DeletionOutcome {
    /// Every final outcome (all but `pending`), to register the metric's
    /// series at zero.
    pub const FINAL: [Self; 5] = [
        Self::Deleted,
        Self::Absent,
        Self::MembersRemained,
        Self::Unsupported,
        Self::Failed,
    ];

    /// The metric label and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::Absent => "absent",
            Self::Pending => "pending",
            Self::MembersRemained => "members_remained",
            Self::Unsupported => "unsupported",
            Self::Failed => "failed",
        }
    }
}

/// One consumer group's fate, as `DELETE /tenants/{id}` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupDeletion {
    /// The group.
    pub group: String,
    /// Whether the broker deleted it (or it did not exist).
    pub deleted: bool,
    /// What happened.
    pub outcome: DeletionOutcome,
    /// Why it was not deleted, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

const METRIC: &str = "tenants_consumer_group_deletions_total";

/// Registers the deletion counter with every outcome at zero, so a panel
/// querying it has series before the first deletion.
pub fn describe_metrics() {
    metrics::describe_counter!(
        METRIC,
        "Consumer groups of deleted tenants' variants, by final outcome"
    );
    for outcome in DeletionOutcome::FINAL {
        // Adding zero creates the series without resetting a count another
        // registry in this process (tests, the demo) has made.
        metrics::counter!(METRIC, "outcome" => outcome.as_str()).increment(0);
    }
}

/// Deletes consumer groups once they are empty; see the module docs.
#[derive(Clone)]
pub struct GroupDeleter {
    admin: Arc<AdminClient<DefaultClientContext>>,
    settings: GroupDeletionSettings,
}

/// One attempt's view of a group.
enum Probe {
    /// No such group, or it is dead.
    Gone,
    /// This many members are still in it.
    Members(usize),
}

impl GroupDeleter {
    /// A deleter using `admin`.
    pub fn new(
        admin: Arc<AdminClient<DefaultClientContext>>,
        settings: GroupDeletionSettings,
    ) -> Self {
        Self { admin, settings }
    }

    /// Deletes `groups`, each waited for at most `wait_ms`; a group that
    /// still has members then is answered `pending` and retried in the
    /// background.
    pub async fn delete(&self, groups: &[String]) -> Vec<GroupDeletion> {
        let wait = self.settings.wait;
        let mut answers = Vec::with_capacity(groups.len());
        for group in groups {
            let answer = self.delete_one(group, Instant::now() + wait).await;
            if answer.outcome == DeletionOutcome::Pending {
                let deleter = self.clone();
                let group = group.clone();
                let retry_for = self.settings.retry_for;
                tokio::spawn(async move {
                    let last = deleter.delete_one(&group, Instant::now() + retry_for).await;
                    let last = match last.outcome {
                        DeletionOutcome::Pending => GroupDeletion {
                            outcome: DeletionOutcome::MembersRemained,
                            ..last
                        },
                        _ => last,
                    };
                    record(&last);
                });
            } else {
                record(&answer);
            }
            answers.push(answer);
        }
        answers
    }

    async fn delete_one(&self, group: &str, deadline: Instant) -> GroupDeletion {
        let answer = |outcome: DeletionOutcome, reason: Option<String>| GroupDeletion {
            group: group.to_string(),
            deleted: matches!(outcome, DeletionOutcome::Deleted | DeletionOutcome::Absent),
            outcome,
            reason,
        };
        let mut backoff = Duration::from_millis(100);
        let mut last_error: Option<String>;
        loop {
            match self.probe(group).await {
                Err(KafkaError::GroupListFetch(RDKafkaErrorCode::UnsupportedFeature)) => {
                    return answer(
                        DeletionOutcome::Unsupported,
                        Some("the broker cannot describe or delete consumer groups (no DescribeGroups/DeleteGroups); delete the group by hand if it exists".into()),
                    );
                }
                Err(e) => last_error = Some(format!("describing the group: {e}")),
                Ok(Probe::Gone) => return answer(DeletionOutcome::Absent, None),
                Ok(Probe::Members(members)) if members > 0 => {
                    last_error = Some(format!("{members} member(s) still in the group"));
                    if Instant::now() >= deadline {
                        return answer(
                            DeletionOutcome::Pending,
                            Some(format!(
                                "{members} member(s) still in the group: stop the variant; deletion is retried for {:?}",
                                self.settings.retry_for
                            )),
                        );
                    }
                }
                Ok(Probe::Members(_)) => match self.delete_empty(group).await {
                    Ok(()) => return answer(DeletionOutcome::Deleted, None),
                    Err(RDKafkaErrorCode::GroupIdNotFound) => {
                        return answer(DeletionOutcome::Absent, None);
                    }
                    // A member joined between the look and the delete.
                    Err(RDKafkaErrorCode::NonEmptyGroup) => {
                        last_error = Some("a member joined the group".into());
                    }
                    Err(code) if is_permanent(code) => {
                        return answer(
                            DeletionOutcome::Failed,
                            Some(format!("the broker refused: {code}")),
                        );
                    }
                    Err(code) => last_error = Some(format!("deleting the group: {code}")),
                },
            }
            if Instant::now() >= deadline {
                return answer(DeletionOutcome::Failed, last_error);
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn probe(&self, group: &str) -> Result<Probe, KafkaError> {
        let admin = self.admin.clone();
        let name = group.to_string();
        tokio::task::spawn_blocking(move || {
            let list = admin
                .inner()
                .fetch_group_list(Some(&name), Duration::from_secs(5))?;
            Ok(match list.groups().iter().find(|g| g.name() == name) {
                None => Probe::Gone,
                Some(info) if info.state() == "Dead" => Probe::Gone,
                Some(info) => Probe::Members(info.members().len()),
            })
        })
        .await
        .expect("describing a group does not panic")
    }

    async fn delete_empty(&self, group: &str) -> Result<(), RDKafkaErrorCode> {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
        match self.admin.delete_groups(&[group], &options).await {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) | None => Ok(()),
                Some(Err((_, code))) => Err(code),
            },
            Err(KafkaError::AdminOp(code)) => Err(code),
            Err(_) => Err(RDKafkaErrorCode::Fail),
        }
    }
}

/// Errors that no retry will mend.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidGroupId
            | RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::UnsupportedFeature
    )
}

fn record(deletion: &GroupDeletion) {
    metrics::counter!(METRIC, "outcome" => deletion.outcome.as_str()).increment(1);
    match deletion.outcome {
        DeletionOutcome::Deleted | DeletionOutcome::Absent => {
            tracing::info!(group = %deletion.group, outcome = deletion.outcome.as_str(), "consumer group deletion")
        }
        _ => tracing::warn!(
            group = %deletion.group,
            outcome = deletion.outcome.as_str(),
            reason = deletion.reason.as_deref().unwrap_or(""),
            "consumer group not deleted"
        ),
    }
}
