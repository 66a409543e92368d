//! The ledger's HTTP API on a real port.

use ledger::{Application, Settings};
use serde_json::json;
use service_kit::RunningService;
use testkit::http::RequestExt;

async fn start(capacity: usize) -> (String, RunningService) {
    testkit::telemetry();
    let mut settings = Settings::for_tests();
    settings.ledger.capacity = capacity;
    let ledger = RunningService::start::<Application>(settings)
        .await
        .unwrap();
    (ledger.url(), ledger)
}

fn entry(id: &str, tenant: Option<&str>) -> serde_json::Value {
    json!({"request_id": id, "tenant": tenant, "variants": {"waiter": "baseline"}, "trace_id": "t", "waited_ms": 5})
}

#[tokio::test]
async fn records_are_served_back_filtered_by_tenant() {
    let (base, ledger) = start(100).await;
    let client = reqwest::Client::new();
    for (id, tenant) in [("a", None), ("b", Some("123")), ("c", Some("456"))] {
        let status = client
            .post(format!("{base}/records"))
            .json(&entry(id, tenant))
            .sent()
            .await
            .status();
        assert_eq!(status, 201);
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

#[tokio::test]
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

#[tokio::test]
async fn the_oldest_entries_are_dropped_at_capacity() {
    let (base, ledger) = start(2).await;
    let client = reqwest::Client::new();
    for id in ["a", "b", "c"] {
        client
            .post(format!("{base}/records"))
            .json(&entry(id, None))
            .sent()
            .await;
    }
    let all: Vec<serde_json::Value> = client.get(format!("{base}/records")).fetch_json().await;
    let ids: Vec<&str> = all
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "c"]);
    ledger.stop().await.unwrap();
}
