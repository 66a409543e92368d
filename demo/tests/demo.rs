//! The README's first command, as a newcomer runs it: the `demo` binary
//! draws both traces and the hop table, then serves the gateway until
//! SIGTERM, answering the curl lines it printed.

use opentelemetry_proto::tonic::common::v1::any_value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use testkit::http::RequestExt;

const DEADLINE: Duration = Duration::from_secs(120);

/// Lines of the child's stdout until one satisfies `last`.
fn read_until(lines: &mpsc::Receiver<String>, last: impl Fn(&str) -> bool) -> Vec<String> {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = last(&line);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(e) => panic!(
                "demo output ended or stalled ({e}); so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_draws_both_traces_then_serves_the_printed_curl_lines_until_stopped() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        // Topics and groups of its own: the tests share a real broker.
        .args(["--port", "0", "--wait-ms", "30", "--isolated"])
        // Warnings on stderr, so a failure here says what the stack saw.
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });

    let output = read_until(&lines, |l| l == "Ctrl-C stops");
    let text = output.join("\n");
    let traces: Vec<&String> = output.iter().filter(|l| l.starts_with("trace ")).collect();
    assert_eq!(traces.len(), 2, "{text}");
    for service in ["gateway", "dispatch", "waiter", "ledger"] {
        assert!(
            output.iter().filter(|l| l.starts_with(service)).count() >= 2,
            "{service} in both traces:\n{text}"
        );
    }
    let row = |service: &str| -> Vec<String> {
        output
            .iter()
            .skip_while(|l| !l.starts_with("hop "))
            .find(|l| l.starts_with(&format!("{service} ")))
            .unwrap_or_else(|| panic!("no {service} row:\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        row("dispatch"),
        ["dispatch", "baseline", "sbx-123"],
        "{text}"
    );
    assert_eq!(row("waiter"), ["waiter", "baseline", "sbx-123"], "{text}");
    assert_eq!(row("ledger"), ["ledger", "baseline", "baseline"], "{text}");

    // The printed gateway answers a tenant request the way the demo did.
    let gateway = output
        .iter()
        .find_map(|l| l.strip_prefix("gateway (A) listening on "))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no gateway address:\n{text}"))
        .to_string();
    let tenant_curl = output
        .iter()
        .find(|l| l.contains("baggage: tenant=123"))
        .unwrap_or_else(|| panic!("no tenant curl line:\n{text}"));
    assert!(
        tenant_curl.contains(&format!("{gateway}/wait")),
        "{tenant_curl}"
    );
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("{gateway}/wait"))
        .header("baggage", "tenant=123")
        .json(&serde_json::json!({"name": "curl", "wait_ms": 10}))
        .fetch_json()
        .await;
    assert_eq!(response["reply"]["variant"], "sbx-123", "{response}");

    assert!(testkit::signal(&child, testkit::Signal::SIGTERM));
    let exit = tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("the demo stops on SIGTERM")
        .unwrap()
        .unwrap();
    assert!(exit.success(), "demo exited with {exit}");
    let rest = read_until(&lines, |l| l == "stopping…");
    assert_eq!(rest.last().map(String::as_str), Some("stopping…"));
}

/// The demo exported over OTLP, as a user pointing it at a collector would
/// run it, checked by a real receiver over gRPC and over http/protobuf
/// (which once exported nothing: its client needed a runtime the exporting
/// thread did not have): every service under its own `service.name`, a
/// CLIENT span before every SERVER span of a hop, messaging spans per the
/// pinned conventions, the reply leg back in dispatch, typed attributes,
/// and log records that carry their trace.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_exports_every_hop_over_grpc_and_http_protobuf() {
    use testkit::otlp::{ReceivedSpan, attribute_value};
    const INTERNAL: i32 = 1;
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    const PRODUCER: i32 = 4;
    const CONSUMER: i32 = 5;
    for protocol in ["grpc", "http/protobuf"] {
        let receiver = testkit::otlp::OtlpReceiver::start().await.unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo"))
            .args(["--once", "--port", "0", "--wait-ms", "20", "--isolated"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint(protocol))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let status = tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("demo --once exits")
            .unwrap();
        assert!(status.success(), "{protocol}: {status}");
        // The demo flushes before it exits, so everything has arrived.
        let spans = receiver.spans();
        assert!(spans.iter().all(|s| s.protocol == protocol), "{protocol}");
        let services: std::collections::BTreeSet<&str> =
            spans.iter().map(|s| s.service_name.as_str()).collect();
        for service in ["gateway", "dispatch", "waiter", "ledger", "tenants"] {
            assert!(
                services.contains(service),
                "{protocol}: no service.name {service} among {services:?}"
            );
        }
        assert!(
            spans
                .iter()
                .all(|s| s.schema_url == "https://opentelemetry.io/schemas/1.42.0"),
            "{protocol}: every scope names the pinned conventions"
        );
        // The tenant's request: one trace through A, B″, Kafka, C″ and D.
        let tenant_trace = spans
            .iter()
            .find(|s| {
                s.service_name == "dispatch"
                    && s.span.kind == PRODUCER
                    && s.attribute("variant").as_deref() == Some("sbx-123")
            })
            .unwrap_or_else(|| panic!("{protocol}: no variant span among {} spans", spans.len()))
            .trace_id();
        let in_trace: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| s.trace_id() == tenant_trace)
            .collect();
        let names = || {
            in_trace
                .iter()
                .map(|s| format!("{}:{}:{}", s.service_name, s.span.kind, s.span.name))
                .collect::<Vec<_>>()
        };
        let parent_of = |span: &ReceivedSpan| {
            in_trace
                .iter()
                .find(|p| p.span.span_id == span.span.parent_span_id)
                .copied()
        };
        for service in ["gateway", "dispatch", "waiter", "ledger"] {
            assert!(
                in_trace.iter().any(|s| s.service_name == service),
                "{protocol}: no {service} span in the tenant's trace: {:?}",
                names()
            );
        }
        // Every hop over HTTP is a CLIENT span of the caller with the
        // callee's SERVER span under it.
        for server in in_trace.iter().filter(|s| s.span.kind == SERVER) {
            let Some(parent) = parent_of(server) else {
                continue;
            };
            assert_eq!(parent.span.kind, CLIENT, "{protocol}: {:?}", names());
            assert_ne!(parent.service_name, server.service_name);
            assert!(
                matches!(
                    attribute_value(&parent.span, "http.response.status_code")
                        .and_then(|v| v.value.as_ref()),
                    Some(any_value::Value::IntValue(200..=299))
                ),
                "{protocol}: {:?}",
                parent.span.attributes
            );
            assert!(
                matches!(
                    attribute_value(&server.span, "http.response.status_code")
                        .and_then(|v| v.value.as_ref()),
                    Some(any_value::Value::IntValue(200..=299))
                ),
                "{protocol}: the status code is an int: {:?}",
                server.span.attributes
            );
            assert_eq!(server.attribute("url.scheme").as_deref(), Some("http"));
            assert!(server.attribute("http.route").is_some());
        }
        for (caller, callee) in [("gateway", "dispatch"), ("waiter", "ledger")] {
            assert!(
                in_trace.iter().any(|s| s.span.kind == SERVER
                    && s.service_name == callee
                    && parent_of(s).is_some_and(|p| p.service_name == caller)),
                "{protocol}: no {caller} → {callee} CLIENT/SERVER pair: {:?}",
                names()
            );
        }
        // Messaging: `send {topic}` PRODUCER spans, acknowledged with
        // partition (a string, as the conventions type it) and offset.
        let producers: Vec<_> = in_trace
            .iter()
            .filter(|s| s.span.kind == PRODUCER)
            .collect();
        assert!(producers.len() >= 2, "{protocol}: {:?}", names());
        for producer in &producers {
            assert!(
                producer.span.name.starts_with("send "),
                "{}",
                producer.span.name
            );
            assert_eq!(
                producer.attribute("messaging.operation.name").as_deref(),
                Some("send")
            );
            assert!(matches!(
                attribute_value(&producer.span, "messaging.destination.partition.id")
                    .and_then(|v| v.value.as_ref()),
                Some(any_value::Value::StringValue(_))
            ));
            assert!(matches!(
                attribute_value(&producer.span, "messaging.kafka.offset")
                    .and_then(|v| v.value.as_ref()),
                Some(any_value::Value::IntValue(_))
            ));
        }
        // The wait is an int, and a record the baseline leaves to the
        // variant is an INTERNAL `skip`, never a second CONSUMER `process`.
        let wait = in_trace
            .iter()
            .find(|s| s.span.name == "wait")
            .expect("a wait span");
        assert!(
            matches!(
                attribute_value(&wait.span, "wait_ms").and_then(|v| v.value.as_ref()),
                Some(any_value::Value::IntValue(20))
            ),
            "{protocol}: {:?}",
            wait.span.attributes
        );
        let consumers: Vec<_> = in_trace
            .iter()
            .filter(|s| s.span.kind == CONSUMER)
            .collect();
        let skips: Vec<_> = in_trace
            .iter()
            .filter(|s| s.span.name.starts_with("skip "))
            .collect();
        assert!(!skips.is_empty(), "{protocol}: {:?}", names());
        assert!(skips.iter().all(|s| s.span.kind == INTERNAL));
        // The reply leg: dispatch's CONSUMER span under the waiter's send.
        let waiter_process = consumers
            .iter()
            .filter(|s| s.service_name == "waiter")
            .count();
        assert_eq!(
            waiter_process,
            1,
            "{protocol}: one process span: {:?}",
            names()
        );
        let reply = consumers
            .iter()
            .find(|s| s.service_name == "dispatch")
            .unwrap_or_else(|| panic!("{protocol}: no reply leg: {:?}", names()));
        let reply_parent = parent_of(reply).expect("the reply span's parent is in the trace");
        assert_eq!(
            (reply_parent.service_name.as_str(), reply_parent.span.kind),
            ("waiter", PRODUCER)
        );
        // Logs: over OTLP with the trace they happen in.
        let logs = receiver.logs();
        let mapped = logs
            .iter()
            .find(|l| l.body() == Some("tenant mapped"))
            .unwrap_or_else(|| panic!("{protocol}: no `tenant mapped` log among {}", logs.len()));
        assert!(
            spans.iter().any(|s| s.trace_id() == mapped.trace_id()),
            "{protocol}: the log names a trace that was exported"
        );
        assert_eq!(
            mapped.service_name, "tenants",
            "{protocol}: a log record goes out under the service that logged it"
        );
    }
}
