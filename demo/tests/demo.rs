//! The README's first command, as a newcomer runs it: the `demo` binary
//! draws both traces and the hop table, then serves the gateway until
//! SIGTERM, answering the curl lines it printed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
        .args(["--port", "0", "--wait-ms", "30"])
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
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
