//! The ledger's HTTP API on a real port.

use ledger::{Application, Settings};
use serde_json::json;
use service_kit::RunningService;
use testkit::http::RequestExt;

async fn start(capacity: usize) -> (String, RunningService) {
    let mut settings = Settings::for_tests();
    settings.ledger.capacity = capacity;
    start_with(settings).await
}

async fn start_with(settings: Settings) -> (String, RunningService) {
    testkit::telemetry();
    let ledger = RunningService::start::<Application>(settings)
        .await
        .unwrap();
    (ledger.url(), ledger)
}

/// Posts `entry` to the ledger at `base`; its status (a failure after 30 s).
async fn post(base: &str, entry: &serde_json::Value) -> reqwest::StatusCode {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
        .post(format!("{base}/records"))
        .json(entry)
        .sent()
        .await
        .status()
}

fn entry(id: &str, tenant: Option<&str>) -> serde_json::Value {
    json!({"request_id": id, "tenant": tenant, "variants": {"waiter": "baseline"}, "trace_id": "t", "waited_ms": 5})
}

#[tokio::test(flavor = "multi_thread")]
async fn records_are_served_back_filtered_by_tenant() {
    let (base, ledger) = start(100).await;
    let client = reqwest::Client::new();
    for (id, tenant) in [("a", None), ("b", Some("123")), ("c", Some("456"))] {
        assert_eq!(post(&base, &entry(id, tenant)).await, 201);
    }
    let get = |query: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let body: Vec<serde_json::Value> = client
                .get(format!("{base}/records{query}"))
                .fetch_json()
                .await;
            body.iter()
                .map(|e| e["request_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(get("").await, ["a", "b", "c"]);
    assert_eq!(get("?tenant=123").await, ["b"]);
    assert_eq!(
        get("?tenant=").await,
        ["a"],
        "an empty tenant lists production traffic"
    );
    ledger.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_get_a_clear_4xx_and_store_nothing() {
    let (base, ledger) = start(100).await;
    let client = reqwest::Client::new();
    let malformed = client
        .post(format!("{base}/records"))
        .header("content-type", "application/json")
        .body("{not json")
        .sent()
        .await;
    assert_eq!(malformed.status(), 400);
    let message: serde_json::Value = malformed.json().await.unwrap();
    assert!(
        message["error"].as_str().unwrap().contains("JSON"),
        "{message}"
    );
    let missing = client
        .post(format!("{base}/records"))
        .json(&json!({"request_id": "x"}))
        .sent()
        .await;
    assert_eq!(missing.status(), 422);
    let empty_id = client
        .post(format!("{base}/records"))
        .json(&entry(" ", None))
        .sent()
        .await;
    assert_eq!(empty_id.status(), 400);
    let all: Vec<serde_json::Value> = client.get(format!("{base}/records")).fetch_json().await;
    assert!(all.is_empty());
    ledger.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_entries_are_dropped_at_capacity() {
    let (base, ledger) = start(2).await;
    let client = reqwest::Client::new();
    for id in ["a", "b", "c"] {
        post(&base, &entry(id, None)).await;
    }
    let all: Vec<serde_json::Value> = client.get(format!("{base}/records")).fetch_json().await;
    let ids: Vec<&str> = all
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "c"]);
    ledger.stop().await.unwrap();
}

/// A ledger process with only 256 file descriptors, flooded with 1,000
/// connections that never finish their headers: it keeps answering normal
/// requests, because half-sent requests are closed after the header read
/// timeout and connections beyond the cap wait in the backlog instead of
/// exhausting descriptors (before, `accept` failed with "Too many open
/// files" and normal requests timed out).
/// Memory is bounded by bytes, not only by count: fifty 30 KB entries into
/// a 200 KB budget keep only the newest few.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_is_bounded_by_bytes() {
    let mut settings = Settings::for_tests();
    settings.ledger.max_bytes = 200_000;
    let (base, ledger) = start_with(settings).await;
    let client = reqwest::Client::new();
    for i in 0..50 {
        let mut big = entry(&format!("big-{i}"), None);
        big["trace_id"] = json!("t".repeat(30_000));
        assert_eq!(post(&base, &big).await, 201);
    }
    let kept: Vec<serde_json::Value> = client.get(format!("{base}/records")).fetch_json().await;
    assert!((1..=6).contains(&kept.len()), "{} kept", kept.len());
    assert_eq!(
        kept.last().unwrap()["request_id"],
        "big-49",
        "the newest stay"
    );
    ledger.stop().await.unwrap();
}

/// `GET /records` comes a page at a time: `limit` entries and, when there
/// are more, a cursor for the next page.
#[tokio::test(flavor = "multi_thread")]
async fn records_come_a_page_at_a_time() {
    let (base, ledger) = start(100).await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        post(&base, &entry(&format!("e-{i}"), None)).await;
    }
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let response = client.get(format!("{base}/records?{query}")).sent().await;
        let next = response
            .headers()
            .get(ledger::NEXT_PAGE_HEADER)
            .map(|v| v.to_str().unwrap().to_string());
        let page: Vec<serde_json::Value> = response.json().await.unwrap();
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .map(|e| e["request_id"].as_str().unwrap().to_string()),
        );
        match next {
            Some(after) => query = format!("limit=2&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, ["e-0", "e-1", "e-2", "e-3", "e-4"]);
    ledger.stop().await.unwrap();
}

/// With a token set, writes need it; reads do not.
#[tokio::test(flavor = "multi_thread")]
async fn writes_can_require_a_token() {
    let mut settings = Settings::for_tests();
    settings.ledger.token = Some(settings::Secret::new("ledger-secret"));
    let (base, ledger) = start_with(settings).await;
    let client = reqwest::Client::new();
    let write = |token: Option<&'static str>| {
        let mut request = client
            .post(format!("{base}/records"))
            .json(&entry("t", None));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.sent()
    };
    assert_eq!(write(None).await.status(), 401);
    assert_eq!(write(Some("guess")).await.status(), 403);
    assert_eq!(write(Some("ledger-secret")).await.status(), 201);
    let read = client.get(format!("{base}/records")).sent().await;
    assert_eq!(read.status(), 200);
    ledger.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_cannot_exhaust_the_server() {
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncWriteExt;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"));
    command
        .env("WAITER_BUS__HTTP__HOST", "127.0.0.1")
        .env("WAITER_BUS__HTTP__PORT", port.to_string())
        .env("WAITER_BUS__HTTP__LIMITS__HEADER_READ_TIMEOUT", "1s")
        .env("WAITER_BUS__HTTP__LIMITS__MAX_CONNECTIONS", "128")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let mut child = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    testkit::eventually(
        "the ledger answers",
        std::time::Duration::from_secs(30),
        || {
            let request = client.get(format!("{base}/healthz")).send();
            async move { request.await.ok().filter(|r| r.status().is_success()) }
        },
    )
    .await
    .unwrap();

    let mut half_open = Vec::new();
    for _ in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(b"GET /records HTTP/1.1\r\nHost: x")
            .await
            .unwrap();
        half_open.push(stream);
    }
    for i in 0..5 {
        let status = post(&base, &entry(&format!("normal-{i}"), None)).await;
        assert_eq!(
            status, 201,
            "normal request {i} while 1,000 half-open connections sit there"
        );
    }
    drop(half_open);
    child.kill().unwrap();
    child.wait().unwrap();
}
