//! The demo: all of waiter-bus in one process, and its traces drawn in the
//! terminal.
//!
//! Start with [`Stack`]: it starts the registry, ledger (D), baseline waiter
//! (C), dispatch (B) and gateway (A) on one broker, adds a tenant's variants
//! (B″, C″) with [`Stack::start_variant`] and maps the tenant to them with
//! [`Stack::map`]. [`waterfall`] draws a trace from the in-process span sink
//! and the table of which variant handled each hop. The `demo` binary
//! (`cargo run --release -p demo`) puts these together; the flow tests use
//! the same [`Stack`]. [`churn`] is the tenancy-under-change scenario.

pub mod churn;
pub mod process;
pub mod stack;
pub mod waterfall;

pub use stack::{DEADLINE, Stack, StackNames, StackOptions};

use anyhow::Context;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::SpanData;

/// The services a request passes on its way from A to D.
pub const SERVICES: [&str; 4] = [
    protocol::Service::Gateway.as_str(),
    protocol::Service::Dispatch.as_str(),
    protocol::Service::Waiter.as_str(),
    protocol::Service::Ledger.as_str(),
];

/// Waits until the trace `trace_id` (hex) is complete in `sink`: a span from
/// every service in [`SERVICES`] and the ended root span. The ledger call
/// may finish after the reply, so a trace is not whole when the reply is in.
pub async fn whole_trace(
    sink: &telemetry::SpanSink,
    trace_id: &str,
) -> anyhow::Result<Vec<SpanData>> {
    let trace =
        TraceId::from_hex(trace_id).with_context(|| format!("`{trace_id}` is not a trace id"))?;
    sink.wait_for_trace(trace, DEADLINE, |spans| {
        SERVICES.iter().all(|service| {
            spans
                .iter()
                .any(|s| service_of(s).as_deref() == Some(*service))
        }) && spans.iter().any(|s| s.parent_span_id == SpanId::INVALID)
    })
    .await
    .with_context(|| format!("trace {trace_id} did not reach every service within {DEADLINE:?}"))
}

/// The `service` attribute every waiter-bus span carries.
pub fn service_of(span: &SpanData) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == "service")
        .map(|kv| kv.value.to_string())
}
