//! The README's first command, as a newcomer runs it: the `demo` binary
//! draws both traces and the hop table, then serves the gateway until
//! SIGTERM, answering the curl lines it printed.

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

#[tokio::test]
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

    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: signalling a child this test started and has not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
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
/// run it: every hop of both requests reaches a real receiver, over gRPC and
/// over http/protobuf (which once exported nothing: its client needed a
/// runtime the exporting thread did not have).
#[tokio::test]
async fn the_demo_exports_every_hop_over_grpc_and_http_protobuf() {
    for protocol in ["grpc", "http/protobuf"] {
        let receiver = testkit::otlp::OtlpReceiver::start().await.unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo"))
            .args(["--once", "--port", "0", "--wait-ms", "20", "--isolated"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint(protocol))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
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
        // The tenant's request: one trace through A, B″, Kafka, C″ and D.
        let tenant_trace = spans
            .iter()
            .find(|s| {
                s.attribute("service").as_deref() == Some("dispatch")
                    && s.attribute("variant").as_deref() == Some("sbx-123")
            })
            .unwrap_or_else(|| panic!("{protocol}: no variant span among {} spans", spans.len()))
            .trace_id();
        let in_trace: Vec<_> = spans
            .iter()
            .filter(|s| s.trace_id() == tenant_trace)
            .collect();
        for service in ["gateway", "dispatch", "waiter", "ledger"] {
            assert!(
                in_trace
                    .iter()
                    .any(|s| s.attribute("service").as_deref() == Some(service)),
                "{protocol}: no {service} span in the tenant's trace: {:?}",
                in_trace.iter().map(|s| &s.span.name).collect::<Vec<_>>()
            );
        }
        assert!(
            in_trace
                .iter()
                .any(|s| s.span.kind == 4 && s.span.name.starts_with("send")
                    || s.span.kind == 3 && s.span.name.starts_with("publish")),
            "{protocol}: a PRODUCER span crosses Kafka"
        );
        assert!(
            in_trace.iter().any(|s| s.span.kind == 5),
            "{protocol}: a CONSUMER span continues it"
        );
        assert!(
            spans.iter().all(|s| !s.service_name.is_empty()),
            "{protocol}: every resource names its service"
        );
    }
}
