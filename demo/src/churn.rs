//! The churn scenario: a tenant's traffic through the gateway while its
//! mapping changes, its waiter variant scales out, is killed and comes
//! back; then every request is checked against the routes it was stamped
//! with, with the ledger as witness.
//!
//! [`run`] drives it on a [`Stack`]; the flow test asserts its
//! [`ChurnReport`], and `load`'s `churn` binary prints it (the README's
//! figures).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tenancy::{Route, Routes};

use crate::Stack;

/// How hard and how long.
#[derive(Debug, Clone)]
pub struct ChurnOptions {
    /// The tenant.
    pub tenant: String,
    /// Its variants' label.
    pub label: String,
    /// Requests in all.
    pub requests: usize,
    /// Requests per second.
    pub rate: f64,
    /// The wait each request asks for.
    pub wait_ms: u64,
    /// Kill (crash) waiter instances; otherwise they are stopped gracefully.
    pub kill: bool,
}

impl Default for ChurnOptions {
    fn default() -> Self {
        Self {
            tenant: "churn".into(),
            label: "sbx-churn".into(),
            requests: 400,
            rate: 40.0,
            wait_ms: 10,
            kill: false,
        }
    }
}

/// What happened to every request.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChurnReport {
    /// Requests sent.
    pub sent: usize,
    /// Answered with a reply.
    pub answered: usize,
    /// Not answered (an error status, or no reply), or answered as
    /// recorded but absent from the ledger.
    pub lost: usize,
    /// Answered, but the waiter says the ledger call was not made or
    /// failed (`ledger_recorded: false`): nothing to witness it by.
    pub unwitnessed: usize,
    /// Answered by a waiter or dispatch other than the one the routes at
    /// the request's version named (the baseline standing in for a variant
    /// that went down afterwards counts as that variant's group).
    pub wrong_variant: usize,
    /// Requests the ledger saw processed more than once by one consumer
    /// group: at-least-once redelivery after a crash or a rebalance.
    pub redelivered: usize,
    /// Requests processed by two different consumer groups: must be 0.
    pub processed_by_two_groups: usize,
    /// What the scenario did, in order, with the request count at each step.
    pub steps: Vec<String>,
    /// A few examples of each failure, for the log.
    pub examples: Vec<String>,
}

impl ChurnReport {
    /// Whether the tenancy promise held: nothing lost, nothing answered by
    /// the wrong variant, nothing processed by two groups.
    pub fn held(&self) -> bool {
        self.lost == 0 && self.wrong_variant == 0 && self.processed_by_two_groups == 0
    }
}

/// One request's outcome.
struct Outcome {
    index: usize,
    status: u16,
    body: serde_json::Value,
}

/// Runs the scenario on `stack` (which has no variants labelled
/// `options.label` yet) and checks the outcome.
pub async fn run(stack: &mut Stack, options: &ChurnOptions) -> anyhow::Result<ChurnReport> {
    let tenant = options.tenant.as_str();
    let label = options.label.as_str();
    let both = [("dispatch", label), ("waiter", label)];
    stack.start_variant(label, true, true).await?;
    stack.map(tenant, &both).await?;

    let sent = Arc::new(tokio::sync::watch::channel(0usize).0);
    let traffic = {
        let (gateway, http, sent) = (stack.gateway.clone(), stack.http.clone(), sent.clone());
        let options = options.clone();
        tokio::spawn(async move {
            let mut calls = Vec::with_capacity(options.requests);
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate));
            for i in 0..options.requests {
                tick.tick().await;
                let (gateway, http) = (gateway.clone(), http.clone());
                let baggage = format!("tenant={}", options.tenant);
                let body = json!({"name": format!("churn-{i}"), "wait_ms": options.wait_ms});
                calls.push(tokio::spawn(async move {
                    let response = http
                        .post(format!("{gateway}/wait"))
                        .header("baggage", baggage)
                        .json(&body)
                        .send()
                        .await;
                    match response {
                        Ok(response) => Outcome {
                            index: i,
                            status: response.status().as_u16(),
                            body: response.json().await.unwrap_or_default(),
                        },
                        Err(e) => Outcome {
                            index: i,
                            status: 0,
                            body: json!({"error": e.to_string()}),
                        },
                    }
                }));
                sent.send_replace(i + 1);
            }
            let mut outcomes = Vec::with_capacity(calls.len());
            for call in calls {
                outcomes.push(call.await.expect("a request task does not panic"));
            }
            outcomes
        })
    };

    let mut steps = Vec::new();
    let at = |fraction: f64| {
        let threshold = (options.requests as f64 * fraction) as usize;
        let mut sent = sent.subscribe();
        async move {
            let _ = sent.wait_for(|n| *n >= threshold).await;
            threshold
        }
    };
    let n = at(0.1).await;
    stack.map(tenant, &[("waiter", label)]).await?;
    steps.push(format!("{n}: re-mapped to the waiter variant only"));
    let n = at(0.2).await;
    stack.delete(tenant).await?;
    steps.push(format!("{n}: tenant deleted (drained, then unmapped)"));
    let n = at(0.3).await;
    stack.map(tenant, &both).await?;
    steps.push(format!("{n}: mapped again to both variants"));
    let n = at(0.4).await;
    stack.add_waiter(label).await?;
    steps.push(format!("{n}: waiter variant scaled out to two instances"));
    let stop = if options.kill { "killed" } else { "stopped" };
    let n = at(0.5).await;
    stack.stop_waiter(label, options.kill).await?;
    steps.push(format!("{n}: one waiter instance {stop}"));
    let n = at(0.6).await;
    stack.stop_waiter(label, options.kill).await?;
    steps.push(format!(
        "{n}: the last waiter instance {stop}: the variant goes down"
    ));
    let n = at(0.7).await;
    stack.add_waiter(label).await?;
    steps.push(format!("{n}: waiter variant restarted"));
    let n = at(0.8).await;
    stack.map(tenant, &both).await?;
    steps.push(format!("{n}: re-mapped to both variants"));

    let outcomes = traffic.await.context("the traffic task")?;
    // The registry's table has every version the requests were routed at.
    let routes = stack.tables[0].snapshot();
    // A waiter calls the ledger after its wait; give the last calls time
    // to land (bounded), then read what it witnessed.
    let recorded: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.body["reply"]["ledger_recorded"] == true)
        .filter_map(|o| o.body["reply"]["correlation"].as_str())
        .collect();
    let deadline = tokio::time::Instant::now() + crate::DEADLINE;
    let ledger = loop {
        // While the tenant does not exist (deleted, not mapped yet) its
        // requests are production traffic: look there too.
        let mut ledger = stack.ledger(tenant).await?;
        ledger.extend(stack.ledger("").await?);
        let seen: std::collections::BTreeSet<&str> = ledger
            .iter()
            .filter_map(|e| e["request_id"].as_str())
            .collect();
        if recorded.iter().all(|c| seen.contains(c)) || tokio::time::Instant::now() > deadline {
            break ledger;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut report = check(&routes, tenant, &outcomes, &ledger);
    report.steps = steps;
    Ok(report)
}

/// The waiter and dispatch labels the routes at `version` named for
/// `tenant`, and whether the baseline may have answered for the waiter
/// variant (it went down after `version`, so the baseline stood in).
fn expected(routes: &Routes, tenant: &str, version: u64) -> (String, String, bool) {
    let label = |route: Route<'_>| match route {
        Route::Variant(label) => label.to_string(),
        Route::Baseline | Route::VariantDown(_) => tenancy::BASELINE.to_string(),
    };
    let at = routes.at(version);
    let waiter = at.route(tenant, "waiter");
    let stood_in = match waiter {
        Route::Variant(x) => {
            (version + 1..=routes.version()).any(|later| !routes.at(later).is_live("waiter", x))
        }
        _ => false,
    };
    (label(at.route(tenant, "dispatch")), label(waiter), stood_in)
}

fn hop(body: &serde_json::Value, service: &str) -> String {
    body["hops"]
        .as_array()
        .and_then(|hops| hops.iter().find(|h| h["service"] == service))
        .and_then(|h| h["variant"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn check(
    routes: &Routes,
    tenant: &str,
    outcomes: &[Outcome],
    ledger: &[serde_json::Value],
) -> ChurnReport {
    let mut report = ChurnReport {
        sent: outcomes.len(),
        ..ChurnReport::default()
    };
    let mut processed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for entry in ledger {
        if let (Some(id), Some(waiter)) = (
            entry["request_id"].as_str(),
            entry["variants"]["waiter"].as_str(),
        ) {
            processed.entry(id).or_default().push(waiter);
        }
    }
    let example = |report: &mut ChurnReport, text: String| {
        if report.examples.len() < 10 {
            report.examples.push(text);
        }
    };
    for outcome in outcomes {
        if outcome.status != 200 {
            report.lost += 1;
            example(
                &mut report,
                format!(
                    "#{} not answered: {} {}",
                    outcome.index, outcome.status, outcome.body
                ),
            );
            continue;
        }
        report.answered += 1;
        let body = &outcome.body;
        let version = body["routes_version"].as_u64().unwrap_or_default();
        let (dispatch, waiter, stood_in) = expected(routes, tenant, version);
        let (got_dispatch, got_waiter) = (hop(body, "dispatch"), hop(body, "waiter"));
        let waiter_ok = got_waiter == waiter || (stood_in && got_waiter == tenancy::BASELINE);
        if got_dispatch != dispatch || !waiter_ok {
            report.wrong_variant += 1;
            example(
                &mut report,
                format!(
                    "at version {version}: expected dispatch={dispatch} waiter={waiter}, got dispatch={got_dispatch} waiter={got_waiter}"
                ),
            );
        }
        let correlation = body["reply"]["correlation"].as_str().unwrap_or_default();
        match processed.get(correlation) {
            None if body["reply"]["ledger_recorded"] != true => report.unwitnessed += 1,
            None => {
                report.lost += 1;
                example(
                    &mut report,
                    format!(
                        "#{} ({correlation}) answered but not in the ledger: {body}",
                        outcome.index
                    ),
                );
            }
            Some(by) if by.len() > 1 => {
                // The variant and the baseline standing in for it are one
                // group; anything else is two.
                let one_group = by
                    .iter()
                    .all(|w| *w == waiter || (stood_in && *w == tenancy::BASELINE));
                if one_group {
                    report.redelivered += 1;
                    if report.redelivered <= 2 {
                        example(
                            &mut report,
                            format!("#{} redelivered: {by:?}", outcome.index),
                        );
                    }
                } else {
                    report.processed_by_two_groups += 1;
                    example(&mut report, format!("{correlation} processed by {by:?}"));
                }
            }
            Some(_) => {}
        }
    }
    report
}
