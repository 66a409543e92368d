//! The ledger's HTTP API on a real port.

use ledger::{Application, Settings};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn start(capacity: usize) -> (String, CancellationToken) {
    testkit::telemetry();
    let mut settings = Settings::for_tests();
    settings.ledger.capacity = capacity;
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    (base, stop)
}

fn entry(id: &str, tenant: Option<&str>) -> serde_json::Value {
    json!({"request_id": id, "tenant": tenant, "variants": {"waiter": "baseline"}, "trace_id": "t", "waited_ms": 5})
}

#[tokio::test]
async fn records_are_served_back_filtered_by_tenant() {
    let (base, stop) = start(100).await;
    let client = reqwest::Client::new();
    for (id, tenant) in [("a", None), ("b", Some("123")), ("c", Some("456"))] {
        let status = client
            .post(format!("{base}/records"))
            .json(&entry(id, tenant))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
    }
    let get = |query: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let body: Vec<serde_json::Value> = client
                .get(format!("{base}/records{query}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
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
    stop.cancel();
}

#[tokio::test]
async fn bad_bodies_get_a_clear_4xx_and_store_nothing() {
    let (base, stop) = start(100).await;
    let client = reqwest::Client::new();
    let malformed = client
        .post(format!("{base}/records"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let message: serde_json::Value = malformed.json().await.unwrap();
    assert!(
        message["error"].as_str().unwrap().contains("JSON"),
        "{message}"
    );
    let missing = client
        .post(format!("{base}/records"))
        .json(&json!({"request_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 422);
    let empty_id = client
        .post(format!("{base}/records"))
        .json(&entry(" ", None))
        .send()
        .await
        .unwrap();
    assert_eq!(empty_id.status(), 400);
    let all: Vec<serde_json::Value> = client
        .get(format!("{base}/records"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(all.is_empty());
    stop.cancel();
}

#[tokio::test]
async fn the_oldest_entries_are_dropped_at_capacity() {
    let (base, stop) = start(2).await;
    let client = reqwest::Client::new();
    for id in ["a", "b", "c"] {
        client
            .post(format!("{base}/records"))
            .json(&entry(id, None))
            .send()
            .await
            .unwrap();
    }
    let all: Vec<serde_json::Value> = client
        .get(format!("{base}/records"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = all
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "c"]);
    stop.cancel();
}
