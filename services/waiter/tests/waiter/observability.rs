//! Spans and log lines: the messaging conventions, link mode, head sampling.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn spans_follow_the_messaging_conventions() {
    let telemetry = testkit::telemetry();
    let (kafka, topics, waiter) = started().await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;

    let trace_id = client.send_json("traced", 5).await;
    client.collect(|r| !r.is_empty()).await;
    let trace_id = TraceId::from_hex(&trace_id).unwrap();
    let spans = telemetry
        .spans()
        .wait_for_trace(trace_id, DEADLINE, |spans| {
            spans.iter().any(|s| s.span_kind == SpanKind::Consumer)
                && spans.iter().any(|s| s.span_kind == SpanKind::Producer)
                && spans.iter().any(|s| s.name == "wait")
        })
        .await
        .unwrap();
    let process = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer)
        .unwrap();
    let wait = spans.iter().find(|s| s.name == "wait").unwrap();
    let send = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Producer)
        .unwrap();
    assert_eq!(process.name, format!("process {}", topics.requests));
    assert!(
        process.parent_span_is_remote,
        "process continues the producer's context"
    );
    assert_eq!(wait.parent_span_id, process.span_context.span_id());
    assert_eq!(send.parent_span_id, process.span_context.span_id());
    let attribute = |span: &telemetry::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(
        attribute(process, "messaging.system").as_deref(),
        Some("kafka")
    );
    assert_eq!(
        attribute(process, "messaging.destination.name"),
        Some(topics.requests.clone())
    );
    assert_eq!(
        attribute(process, "messaging.consumer.group.name"),
        Some(topics.group.clone())
    );
    assert_eq!(
        attribute(process, "messaging.kafka.offset").as_deref(),
        Some("0")
    );
    assert_eq!(attribute(process, "variant"), Some(waiter.variant.clone()));
    assert_eq!(
        attribute(send, "messaging.destination.name"),
        Some(topics.replies.clone())
    );
    let events: Vec<&str> = process.events.iter().map(|e| e.name.as_ref()).collect();
    for expected in ["message.timestamp", "queued", "dequeued"] {
        assert!(events.contains(&expected), "{expected} in {events:?}");
    }
    let timestamp = process
        .events
        .iter()
        .find(|e| e.name == "message.timestamp")
        .unwrap();
    let kind = timestamp
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "messaging.kafka.timestamp.type")
        .map(|kv| kv.value.to_string());
    assert!(
        matches!(kind.as_deref(), Some("CreateTime" | "LogAppendTime")),
        "the timestamp says which kind it is: {kind:?}"
    );
    assert!(send.events.iter().any(|e| e.name == "delivery.ack"));
    waiter.stop().await;
}

/// `waiter.trace_mode: link`: the record's `process` span starts a trace of
/// its own, linked to the span that produced the record, and the tenant in
/// the baggage still reaches it; the reply continues the waiter's trace.
#[tokio::test(flavor = "multi_thread")]
async fn in_link_mode_the_process_span_is_a_linked_root_that_keeps_the_baggage() {
    let telemetry = testkit::telemetry();
    let (kafka, topics, waiter) = started_with(|s| {
        s.waiter.trace_mode = waiter::settings::TraceMode::Link;
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let producer_trace = uuid::Uuid::new_v4().simple().to_string();
    let producer_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let traceparent = format!("00-{producer_trace}-{producer_span}-01");
    client
        .send_with_headers(
            &[
                ("correlation", b"linked"),
                ("traceparent", traceparent.as_bytes()),
                ("baggage", b"tenant=42"),
            ],
            br#"{"name":"linked","wait_ms":1}"#,
        )
        .await;
    let replies = client.collect(|r| !r.is_empty()).await;
    let reply = reply_body(&replies[0]);
    assert_ne!(reply.trace_id, producer_trace, "a trace of its own");
    let spans = telemetry
        .spans()
        .wait_for_trace(
            TraceId::from_hex(&reply.trace_id).unwrap(),
            DEADLINE,
            |spans| spans.iter().any(|s| s.span_kind == SpanKind::Consumer),
        )
        .await
        .unwrap();
    let process = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer)
        .unwrap();
    assert_eq!(
        process.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
    let link = process.links.links.first().expect("a link to the producer");
    assert_eq!(link.span_context.trace_id().to_string(), producer_trace);
    assert_eq!(link.span_context.span_id().to_string(), producer_span);
    assert!(
        process
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "tenant" && kv.value.as_str() == "42"),
        "the tenant's baggage goes on: {:?}",
        process.attributes
    );
    waiter.stop().await;
}

/// A log line written while handling a record leads to its trace: it
/// starts with the record's `trace_id=… span_id=…`, and stdout being a
/// pipe, it has no colour codes.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_line_names_its_trace_and_has_no_colour_off_a_terminal() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let (_waiter, lines) = WaiterProcess::start_reading_logs(&kafka, &topics);
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    // A wait over the maximum: the waiter refuses it and says so (a log
    // line inside the record's span).
    client
        .send(Request {
            correlation: Some("too-long"),
            response_topic: None,
            traceparent: Some(&traceparent),
            body: br#"{"name":"Patient","wait_ms":86400000}"#,
        })
        .await;
    client.collect(|r| !r.is_empty()).await;
    let line = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("refusing request") => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no log line about the refusal in {seen:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(
        line.starts_with(&format!("trace_id={trace_id} span_id=")),
        "{line}"
    );
    assert!(!line.contains('\u{1b}'), "no ANSI codes: {line:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_level_does_not_decide_whether_the_trace_continues() {
    // RUST_LOG=error silences the info-level log lines, and must not
    // silence the info-level spans whose context the reply carries.
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let _waiter = WaiterProcess::start_logging(&kafka, &topics, "error");
    let trace_id = client.send_json("quiet", 1).await;
    let replies = client.collect(|r| !r.is_empty()).await;
    let traceparent = header(&replies[0], "traceparent").expect("the reply carries a trace");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], trace_id, "the request's trace continues");
    assert_ne!(parts[2], "0000000000000000", "{traceparent}");
    assert_eq!(parts[3], "01", "sampled: {traceparent}");
}

/// Head sampling: a request whose `traceparent` says "not sampled" gets no
/// spans here (not even a new root) and its reply carries the request's
/// trace context on, unsampled; a sampled request sent alongside is traced.
#[tokio::test(flavor = "multi_thread")]
async fn an_unsampled_request_is_served_without_spans_and_its_reply_continues_its_trace() {
    let telemetry = testkit::telemetry();
    let (kafka, topics, waiter) = started().await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let unsampled_trace = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!(
        "00-{unsampled_trace}-{}-00",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    client
        .send(Request {
            correlation: Some("unsampled"),
            response_topic: None,
            traceparent: Some(&traceparent),
            body: br#"{"name":"unsampled","wait_ms":5}"#,
        })
        .await;
    let sampled_trace = client.send_json("sampled", 5).await;
    let replies = client.collect(|r| r.len() >= 2).await;

    // The sampled one's spans arrive; by then the unsampled one's would have.
    telemetry
        .spans()
        .wait_for_trace(
            TraceId::from_hex(&sampled_trace).unwrap(),
            DEADLINE,
            |spans| spans.iter().any(|s| s.span_kind == SpanKind::Producer),
        )
        .await
        .unwrap();
    let unsampled_id = TraceId::from_hex(&unsampled_trace).unwrap();
    assert!(telemetry.spans().trace(unsampled_id).is_empty());
    let reply = replies
        .iter()
        .find(|r| header(r, "correlation").as_deref() == Some("unsampled"))
        .unwrap();
    let carried = header(reply, "traceparent").unwrap();
    assert!(
        carried.starts_with(&format!("00-{unsampled_trace}-")) && carried.ends_with("-00"),
        "{carried}"
    );
    assert_eq!(reply_body(reply).trace_id, unsampled_trace);
    waiter.stop().await;
}
