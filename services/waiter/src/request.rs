//! Turning a consumed record into a wait, an error reply, or a dead letter.

use std::time::Duration;

use protocol::headers;
use protocol::wire::{MAX_NAME_BYTES, WaitRequestBody};
use rdkafka::message::Headers;

/// A request the waiter can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitRequest {
    /// The `correlation` header, or a generated id when it was missing.
    pub correlation: String,
    /// Topic for the reply.
    pub response_topic: String,
    /// The caller's name.
    pub name: String,
    /// The wait requested (or the default).
    pub requested: Duration,
    /// Why the request will be refused with an error reply instead of served.
    pub refusal: Option<String>,
}

/// Why a record cannot be answered at all; it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// No payload.
    #[error("empty body")]
    EmptyBody,
    /// The payload is not UTF-8 text.
    #[error("body is not UTF-8")]
    BodyNotUtf8,
    /// The payload looks like JSON but is not a valid request.
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// A header the waiter needs is not UTF-8.
    #[error("header `{0}` is not UTF-8")]
    HeaderNotUtf8(&'static str),
    /// `responseTopic` names no legal topic.
    #[error("header `responseTopic` is not a legal topic name: {0:?}")]
    BadResponseTopic(String),
    /// `responseTopic` names the topic the request came from: its reply
    /// would come straight back as a request.
    #[error("header `responseTopic` names the request topic `{0}`; a reply there would loop")]
    ReplyWouldLoop(String),
    /// The record is a waiter's reply (it carries `waiter-bus-reply`):
    /// serving it would answer a reply, and so on for ever.
    #[error("the record is a reply (header `waiter-bus-reply`), not a request")]
    IsAReply,
}

impl Unusable {
    /// Every [`Self::label`].
    pub const LABELS: [&'static str; 7] = [
        "empty_body",
        "body_not_utf8",
        "malformed_json",
        "header_not_utf8",
        "bad_response_topic",
        "reply_would_loop",
        "is_a_reply",
    ];

    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Unusable::EmptyBody => "empty_body",
            Unusable::BodyNotUtf8 => "body_not_utf8",
            Unusable::MalformedJson(_) => "malformed_json",
            Unusable::HeaderNotUtf8(_) => "header_not_utf8",
            Unusable::BadResponseTopic(_) => "bad_response_topic",
            Unusable::ReplyWouldLoop(_) => "reply_would_loop",
            Unusable::IsAReply => "is_a_reply",
        }
    }
}

/// Limits the parser applies.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Wait for a plain-text request or a JSON one without `wait_ms`.
    pub default_wait: Duration,
    /// Longest wait honoured.
    pub max_wait: Duration,
}

/// Where a record came from and where its reply goes by default.
#[derive(Debug, Clone, Copy)]
pub struct Topics<'a> {
    /// The topic the record was consumed from.
    pub request: &'a str,
    /// Where a reply goes when the record names no `responseTopic`.
    pub default_response: &'a str,
}

/// Reads a record's headers and payload.
pub fn parse<H: Headers>(
    headers: Option<&H>,
    payload: Option<&[u8]>,
    topics: Topics<'_>,
    limits: RequestLimits,
) -> Result<WaitRequest, Unusable> {
    if protocol::headers::last(headers, headers::REPLY).is_some() {
        return Err(Unusable::IsAReply);
    }
    let header = |name: &'static str| -> Result<Option<&str>, Unusable> {
        match protocol::headers::last(headers, name) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
                .map_err(|_| Unusable::HeaderNotUtf8(name)),
        }
    };
    let correlation = header(headers::CORRELATION)?.map(str::to_string);
    let response_topic = match header(headers::RESPONSE_TOPIC)? {
        None => topics.default_response.to_string(),
        Some(topic) if topic == topics.request => {
            return Err(Unusable::ReplyWouldLoop(topic.to_string()));
        }
        Some(topic) if is_legal_topic(topic) => topic.to_string(),
        Some(topic) => return Err(Unusable::BadResponseTopic(topic.to_string())),
    };

    let payload = payload
        .filter(|p| !p.is_empty())
        .ok_or(Unusable::EmptyBody)?;
    let text = std::str::from_utf8(payload).map_err(|_| Unusable::BodyNotUtf8)?;
    let (name, requested_ms) = if text.trim_start().starts_with('{') {
        let body: WaitRequestBody =
            serde_json::from_str(text).map_err(|e| Unusable::MalformedJson(e.to_string()))?;
        (body.name, body.wait_ms)
    } else {
        (text.trim().to_string(), None)
    };
    let requested = requested_ms.map_or(limits.default_wait, Duration::from_millis);
    // The same name rule as the HTTP edge; the reply then names only the
    // start of an overlong name, so it stays small.
    let refusal = match WaitRequestBody::check_name(&name) {
        Err(refused) => Some(refused.to_string()),
        Ok(()) => (requested > limits.max_wait).then(|| {
            format!(
                "wait_ms {} exceeds the maximum of {} ms",
                requested.as_millis(),
                limits.max_wait.as_millis()
            )
        }),
    };
    Ok(WaitRequest {
        correlation: correlation.unwrap_or_default(),
        response_topic,
        name: truncated(name, MAX_NAME_BYTES),
        requested,
        refusal,
    })
}

/// `text` cut to at most `limit` bytes, on a character boundary.
fn truncated(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Kafka's rule: 1–249 characters of ASCII letters, digits, `.`, `_`, `-`,
/// and not `.` or `..`.
pub fn is_legal_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod fuzz {
    //! Any record the broker can hold: never a panic, and whatever is
    //! served can be answered (a legal reply topic that is not the request
    //! topic, a bounded name).
    use proptest::prelude::*;
    use rdkafka::message::{Header, OwnedHeaders};

    use super::*;

    const TOPICS: Topics<'static> = Topics {
        request: "Waiter-Requests",
        default_response: "Waiter-Responses",
    };
    const LIMITS: RequestLimits = RequestLimits {
        default_wait: Duration::from_millis(500),
        max_wait: Duration::from_secs(60),
    };

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("correlation".to_string()),
            Just("responseTopic".to_string()),
            Just("waiter-bus-reply".to_string()),
            "[a-zA-Z.-]{1,12}",
        ]
    }

    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            Just(b"Waiter-Requests".to_vec()),
            "[A-Za-z0-9._-]{0,260}".prop_map(String::into_bytes),
        ]
    }

    fn payload() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            (".{0,1100}", any::<Option<u64>>()).prop_map(|(name, wait)| {
                Some(
                    serde_json::to_vec(&serde_json::json!({"name": name, "wait_ms": wait}))
                        .unwrap(),
                )
            }),
            "\\PC{0,50}".prop_map(|text| Some(text.into_bytes())),
        ]
    }

    proptest! {
        #[test]
        fn any_record_is_served_refused_or_dead_lettered(
            headers in proptest::collection::vec((header_name(), header_value()), 0..6),
            payload in payload(),
        ) {
            let owned = headers.iter().fold(OwnedHeaders::new(), |acc, (key, value)| {
                acc.insert(Header { key: key.as_str(), value: Some(value.as_slice()) })
            });
            if let Ok(request) = parse(Some(&owned), payload.as_deref(), TOPICS, LIMITS) {
                prop_assert!(is_legal_topic(&request.response_topic));
                prop_assert_ne!(request.response_topic.as_str(), TOPICS.request);
                prop_assert!(request.name.len() <= MAX_NAME_BYTES);
                if request.refusal.is_none() {
                    prop_assert!(request.requested <= LIMITS.max_wait);
                    prop_assert!(!request.name.trim().is_empty());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders};

    const LIMITS: RequestLimits = RequestLimits {
        default_wait: Duration::from_millis(500),
        max_wait: Duration::from_millis(1000),
    };

    const TOPICS: Topics<'static> = Topics {
        request: "Waiter-Requests",
        default_response: "Waiter-Responses",
    };

    #[test]
    fn a_reply_is_never_served_as_a_request() {
        let reply = br#"{"name":"Ada","wait_ms":1}"#;
        assert_eq!(
            parse_with(&[("waiter-bus-reply", b"baseline")], reply),
            Err(Unusable::IsAReply)
        );
        assert_eq!(
            parse_with(&[("responseTopic", b"Waiter-Requests")], reply),
            Err(Unusable::ReplyWouldLoop("Waiter-Requests".into()))
        );
    }

    #[test]
    fn names_follow_the_http_rule_and_replies_stay_small() {
        let empty = parse_with(&[], br#"{"name":" ","wait_ms":1}"#).unwrap();
        assert_eq!(empty.refusal.as_deref(), Some("`name` must not be empty"));
        let long = "é".repeat(MAX_NAME_BYTES);
        let body = format!(r#"{{"name":"{long}","wait_ms":1}}"#);
        let request = parse_with(&[], body.as_bytes()).unwrap();
        assert!(request.refusal.unwrap().contains("longer than 1024 bytes"));
        assert!(request.name.len() <= MAX_NAME_BYTES && request.name.starts_with('é'));
    }

    fn headers(pairs: &[(&str, &[u8])]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(*v),
            })
        })
    }

    fn parse_with(pairs: &[(&str, &[u8])], body: &[u8]) -> Result<WaitRequest, Unusable> {
        parse(Some(&headers(pairs)), Some(body), TOPICS, LIMITS)
    }

    #[test]
    fn plain_text_is_the_name_with_the_default_wait() {
        let request = parse_with(&[("correlation", b"c-1")], b"Ada").unwrap();
        assert_eq!(request.name, "Ada");
        assert_eq!(request.requested, Duration::from_millis(500));
        assert_eq!(request.correlation, "c-1");
        assert_eq!(request.response_topic, "Waiter-Responses");
        assert_eq!(request.refusal, None);
    }

    #[test]
    fn json_names_the_wait() {
        let request = parse_with(
            &[("responseTopic", b"Other-Replies")],
            br#"{"name":"Ada","wait_ms":250,"extra":true}"#,
        )
        .unwrap();
        assert_eq!(request.requested, Duration::from_millis(250));
        assert_eq!(request.response_topic, "Other-Replies");
        assert_eq!(
            request.correlation, "",
            "missing correlation is left to the caller"
        );
    }

    #[test]
    fn a_wait_over_the_maximum_is_refused_not_dead_lettered() {
        let request = parse_with(&[], br#"{"name":"Ada","wait_ms":5000}"#).unwrap();
        assert!(request.refusal.unwrap().contains("exceeds the maximum"));
    }

    #[test]
    fn unusable_records_say_why() {
        assert_eq!(parse_with(&[], b""), Err(Unusable::EmptyBody));
        assert_eq!(parse_with(&[], b"\xff\xfe"), Err(Unusable::BodyNotUtf8));
        assert!(matches!(
            parse_with(&[], br#"{"name": 3"#),
            Err(Unusable::MalformedJson(_))
        ));
        assert!(matches!(
            parse_with(&[], br#"{"wait_ms": 3}"#),
            Err(Unusable::MalformedJson(m)) if m.contains("name")
        ));
        assert!(matches!(
            parse_with(&[], br#"{"name":"x","wait_ms":-1}"#),
            Err(Unusable::MalformedJson(_))
        ));
        assert_eq!(
            parse_with(&[("correlation", b"\xff")], b"Ada"),
            Err(Unusable::HeaderNotUtf8("correlation"))
        );
        assert_eq!(
            parse_with(&[("responseTopic", b"no spaces")], b"Ada"),
            Err(Unusable::BadResponseTopic("no spaces".into()))
        );
    }

    #[test]
    fn legal_topic_names() {
        assert!(is_legal_topic("Waiter-Responses"));
        assert!(is_legal_topic("a.b_c-1"));
        for bad in ["", ".", "..", "a b", "ä", &"x".repeat(250)] {
            assert!(!is_legal_topic(bad), "{bad:?}");
        }
    }
}
