//! `GET /api/pipeline`: the waiter's stages as its own `/metrics` tells
//! them: channel depth against capacity, time blocked handing on, waits in
//! flight, consumer lag, and any partition stopped at a record set the
//! client cannot decode.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

/// One waiter instance's stages.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PipelineView {
    /// The `/metrics` it was read from.
    pub source: String,
    /// Why it could not be read, if it could not.
    pub error: Option<String>,
    /// By variant: what each variant's stages hold.
    pub variants: BTreeMap<String, VariantStages>,
}

/// One variant's stages.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VariantStages {
    /// Items waiting in the requests and replies channels.
    pub channel_depth: BTreeMap<String, f64>,
    /// Their capacity.
    pub channel_capacity: BTreeMap<String, f64>,
    /// Seconds spent blocked handing on, per channel, since start.
    pub blocked_seconds: BTreeMap<String, f64>,
    /// Waits in progress.
    pub waits_in_flight: f64,
    /// Records behind the high watermark, summed over partitions.
    pub consumer_lag: f64,
    /// Partitions stopped at a record set that cannot be decoded, as
    /// `topic/partition` (see `waiter.undecodable_batches`).
    pub stopped_partitions: Vec<String>,
}

pub(crate) async fn pipeline(State(state): State<crate::AppState>) -> Json<Vec<PipelineView>> {
    let mut views = Vec::new();
    for url in &state.settings.waiter_metrics_urls {
        let fetched = async {
            state
                .http
                .get(url)
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        };
        views.push(match fetched.await {
            Ok(text) => PipelineView {
                source: url.clone(),
                error: None,
                variants: read(&text),
            },
            Err(e) => PipelineView {
                source: url.clone(),
                error: Some(e.to_string()),
                variants: BTreeMap::new(),
            },
        });
    }
    Json(views)
}

/// The waiter's pipeline series in a Prometheus exposition.
pub fn read(exposition: &str) -> BTreeMap<String, VariantStages> {
    let mut variants: BTreeMap<String, VariantStages> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let label = |key: &str| {
            labels.split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_string())
            })
        };
        let Some(variant) = label("variant") else {
            continue;
        };
        let stages = variants.entry(variant).or_default();
        let channel = label("channel").unwrap_or_default();
        match name {
            "waiter_channel_depth" => {
                stages.channel_depth.insert(channel, value);
            }
            "waiter_channel_capacity" => {
                stages.channel_capacity.insert(channel, value);
            }
            "waiter_handoff_blocked_seconds_sum" => {
                stages.blocked_seconds.insert(channel, value);
            }
            "waiter_waits_in_flight" => stages.waits_in_flight = value,
            "waiter_consumer_lag_records" => stages.consumer_lag += value,
            "waiter_partition_stopped" if value > 0.0 => {
                let topic = label("topic").unwrap_or_default();
                let partition = label("partition").unwrap_or_default();
                stages
                    .stopped_partitions
                    .push(format!("{topic}/{partition}"));
            }
            _ => {}
        }
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_are_read_per_variant() {
        let text = "\
# HELP waiter_channel_depth Items waiting.
waiter_channel_depth{variant=\"baseline\",channel=\"requests\"} 3
waiter_channel_capacity{variant=\"baseline\",channel=\"requests\"} 10
waiter_handoff_blocked_seconds_sum{variant=\"baseline\",channel=\"replies\"} 0.25
waiter_waits_in_flight{variant=\"sbx-123\"} 7
waiter_consumer_lag_records{variant=\"baseline\",topic=\"t\",partition=\"0\"} 2
waiter_consumer_lag_records{variant=\"baseline\",topic=\"t\",partition=\"1\"} 5
waiter_partition_stopped{variant=\"baseline\",topic=\"t\",partition=\"0\"} 0
waiter_partition_stopped{variant=\"baseline\",topic=\"t\",partition=\"1\"} 1
";
        let read = read(text);
        let baseline = &read["baseline"];
        assert_eq!(baseline.channel_depth["requests"], 3.0);
        assert_eq!(baseline.channel_capacity["requests"], 10.0);
        assert_eq!(baseline.blocked_seconds["replies"], 0.25);
        assert_eq!(baseline.consumer_lag, 7.0);
        assert_eq!(
            baseline.stopped_partitions,
            ["t/1"],
            "a resumed one is not listed"
        );
        assert_eq!(read["sbx-123"].waits_in_flight, 7.0);
    }
}
