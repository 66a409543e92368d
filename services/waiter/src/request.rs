//! Turning a consumed record into a wait, an error reply, or a dead letter.

use std::time::Duration;

use protocol::headers;
use protocol::wire::{MAX_NAME_BYTES, WaitRequestBody};
use rdkafka::message::Headers;

use crate::reasons::DeadLetter;

/// A request the waiter can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitRequest {
    /// What matches the reply to the request, as the caller sent it; empty
    /// when it sent none (the consumer then generates one).
    pub correlation: Correlation,
    /// The correlation was generated here (the request had none), so the
    /// reply must add the header: it is not among those carried on.
    pub correlation_generated: bool,
    /// Topic for the reply.
    pub response_topic: String,
    /// The partition the caller reads replies from, when it named one.
    pub reply_partition: Option<i32>,
    /// The caller's name.
    pub name: String,
    /// The wait requested (or the default).
    pub requested: Duration,
    /// Why the request will be refused with an error reply instead of served.
    pub refusal: Option<String>,
}

impl WaitRequest {
    /// How long serving it takes with every wait scaled by `scale` (see
    /// `waiter.wait_scale`): nothing for a request that is refused.
    pub fn wait(&self, scale: f64) -> Duration {
        match self.refusal {
            Some(_) => Duration::ZERO,
            None => self.requested.mul_f64(scale),
        }
    }
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
    /// A header the waiter needs as text (the reply topic) is not UTF-8.
    #[error("header `{0}` is not UTF-8")]
    HeaderNotUtf8(String),
    /// The reply-topic header names no legal topic.
    #[error("header `{header}` is not a legal topic name: {topic:?}")]
    BadResponseTopic {
        /// The header it came in.
        header: String,
        /// What it said.
        topic: String,
    },
    /// The reply-topic header names the topic the request came from: its
    /// reply would come straight back as a request.
    #[error("header `{header}` names the request topic `{topic}`; a reply there would loop")]
    ReplyWouldLoop {
        /// The header it came in.
        header: String,
        /// The request topic.
        topic: String,
    },
    /// The reply-partition header is not a partition number.
    #[error("header `{header}`: {reason}")]
    BadReplyPartition {
        /// The header it came in.
        header: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The record is a waiter's reply (it carries `waiter-bus-reply`):
    /// serving it would answer a reply, and so on for ever.
    #[error("the record is a reply (header `waiter-bus-reply`), not a request")]
    IsAReply,
}

impl Unusable {
    /// What the dead letter is counted and labelled as.
    pub fn reason(&self) -> DeadLetter {
        match self {
            Unusable::EmptyBody => DeadLetter::EmptyBody,
            Unusable::BodyNotUtf8 => DeadLetter::BodyNotUtf8,
            Unusable::MalformedJson(_) => DeadLetter::MalformedJson,
            Unusable::HeaderNotUtf8(_) => DeadLetter::HeaderNotUtf8,
            Unusable::BadResponseTopic { .. } => DeadLetter::BadResponseTopic,
            Unusable::ReplyWouldLoop { .. } => DeadLetter::ReplyWouldLoop,
            Unusable::BadReplyPartition { .. } => DeadLetter::BadReplyPartition,
            Unusable::IsAReply => DeadLetter::IsAReply,
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

/// The request headers that say where a reply goes and how it is matched:
/// each list is tried in order and the first header present wins. The
/// defaults (`config/base.yaml`) read the Go app's, Spring Kafka's and
/// SmallRye's names (see the README's table of request/reply dialects).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyHeaders {
    /// Headers naming the reply topic.
    pub topic: Vec<String>,
    /// Headers naming the reply partition (a 4-byte big-endian int).
    pub partition: Vec<String>,
    /// Headers carrying the correlation id; a reply carries it back under
    /// the same name, byte for byte. The first name is the one a generated
    /// id goes under when a request has none.
    pub correlation: Vec<String>,
}

impl Default for ReplyHeaders {
    fn default() -> Self {
        use protocol::headers::{smallrye, spring};
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Self {
            topic: names(&[
                headers::RESPONSE_TOPIC,
                spring::REPLY_TOPIC,
                smallrye::REPLY_TOPIC,
            ]),
            partition: names(&[spring::REPLY_PARTITION, smallrye::REPLY_PARTITION]),
            correlation: names(&[
                headers::CORRELATION,
                spring::CORRELATION_ID,
                smallrye::CORRELATION_ID,
            ]),
        }
    }
}

impl ReplyHeaders {
    /// The first of `names` present on the record, with its (last) value.
    fn first<'h, 'n, H: Headers>(
        headers: Option<&'h H>,
        names: &'n [String],
    ) -> Option<(&'n str, &'h [u8])> {
        names.iter().find_map(|name| {
            protocol::headers::last(headers, name).map(|value| (name.as_str(), value))
        })
    }
}

/// What matches a reply to its request: the header it came in and its
/// bytes, which the reply carries back unchanged (Spring's default is a
/// 16-byte binary UUID; the Go app's, text).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Correlation {
    /// The header name.
    pub header: String,
    /// Its value, byte for byte.
    pub value: Vec<u8>,
}

impl Correlation {
    /// The value as text for logs, spans, reply bodies and the ledger: as
    /// it is when UTF-8, else in hex.
    pub fn text(&self) -> String {
        match std::str::from_utf8(&self.value) {
            Ok(text) => text.to_string(),
            Err(_) => self.value.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Whether the request carried none.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// Reads a record's headers and payload.
pub fn parse<H: Headers>(
    headers: Option<&H>,
    payload: Option<&[u8]>,
    topics: Topics<'_>,
    limits: RequestLimits,
    names: &ReplyHeaders,
) -> Result<WaitRequest, Unusable> {
    if protocol::headers::last(headers, headers::REPLY).is_some() {
        return Err(Unusable::IsAReply);
    }
    let correlation = match ReplyHeaders::first(headers, &names.correlation) {
        Some((header, value)) => Correlation {
            header: header.to_string(),
            value: value.to_vec(),
        },
        None => Correlation::default(),
    };
    let response_topic = match ReplyHeaders::first(headers, &names.topic) {
        None => topics.default_response.to_string(),
        Some((header, bytes)) => {
            let topic = std::str::from_utf8(bytes)
                .map_err(|_| Unusable::HeaderNotUtf8(header.to_string()))?
                .trim();
            match topic {
                "" => topics.default_response.to_string(),
                topic if topic == topics.request => {
                    return Err(Unusable::ReplyWouldLoop {
                        header: header.to_string(),
                        topic: topic.to_string(),
                    });
                }
                topic if is_legal_topic(topic) => topic.to_string(),
                topic => {
                    return Err(Unusable::BadResponseTopic {
                        header: header.to_string(),
                        topic: topic.to_string(),
                    });
                }
            }
        }
    };
    let reply_partition = match ReplyHeaders::first(headers, &names.partition) {
        None => None,
        Some((header, value)) => protocol::headers::reply_partition(value).map_err(|reason| {
            Unusable::BadReplyPartition {
                header: header.to_string(),
                reason,
            }
        })?,
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
        correlation,
        correlation_generated: false,
        response_topic,
        reply_partition,
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
            Just("kafka_replyTopic".to_string()),
            Just("kafka_replyPartition".to_string()),
            Just("kafka_correlationId".to_string()),
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
            if let Ok(request) = parse(Some(&owned), payload.as_deref(), TOPICS, LIMITS, &ReplyHeaders::default()) {
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
            Err(Unusable::ReplyWouldLoop {
                header: "responseTopic".into(),
                topic: "Waiter-Requests".into()
            })
        );
        assert!(matches!(
            parse_with(&[("kafka_replyTopic", b"Waiter-Requests")], reply),
            Err(Unusable::ReplyWouldLoop { header, .. }) if header == "kafka_replyTopic"
        ));
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
        parse(
            Some(&headers(pairs)),
            Some(body),
            TOPICS,
            LIMITS,
            &ReplyHeaders::default(),
        )
    }

    #[test]
    fn spring_and_smallrye_requests_name_their_reply_topic_partition_and_correlation() {
        let uuid = [7u8, 0, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
        let spring = parse_with(
            &[
                ("kafka_replyTopic", b"spring-replies"),
                ("kafka_replyPartition", &[0, 0, 0, 2]),
                ("kafka_correlationId", &uuid),
            ],
            b"Ada",
        )
        .unwrap();
        assert_eq!(spring.response_topic, "spring-replies");
        assert_eq!(spring.reply_partition, Some(2));
        assert_eq!(
            spring.correlation,
            Correlation {
                header: "kafka_correlationId".into(),
                value: uuid.to_vec()
            },
            "binary correlation ids are kept byte for byte"
        );
        assert_eq!(
            spring.correlation.text(),
            "0700ff0102030405060708090a0b0c0d"
        );

        let smallrye = parse_with(
            &[
                ("REPLY_TOPIC", b"q-replies"),
                ("REPLY_PARTITION", &[0, 0, 0, 0]),
                ("REPLY_CORRELATION_ID", b"id-1"),
            ],
            b"Ada",
        )
        .unwrap();
        assert_eq!(smallrye.response_topic, "q-replies");
        assert_eq!(smallrye.reply_partition, Some(0));
        assert_eq!(smallrye.correlation.header, "REPLY_CORRELATION_ID");

        // The Go app's names come first when a record carries several.
        let both = parse_with(
            &[
                ("kafka_replyTopic", b"spring-replies"),
                ("responseTopic", b"go-replies"),
                ("kafka_correlationId", b"s"),
                ("correlation", b"g"),
            ],
            b"Ada",
        )
        .unwrap();
        assert_eq!(both.response_topic, "go-replies");
        assert_eq!(both.correlation.value, b"g");
        assert_eq!(both.reply_partition, None);

        assert!(matches!(
            parse_with(&[("kafka_replyPartition", &[1, 2])], b"Ada"),
            Err(Unusable::BadReplyPartition { header, .. }) if header == "kafka_replyPartition"
        ));
    }

    #[test]
    fn which_headers_are_read_is_configuration() {
        let names = ReplyHeaders {
            topic: vec!["reply-to".into()],
            partition: vec![],
            correlation: vec!["x-id".into()],
        };
        let owned = headers(&[
            ("reply-to", b"mine"),
            ("responseTopic", b"not-read"),
            ("kafka_replyPartition", &[0, 0, 0, 1]),
            ("x-id", b"42"),
        ]);
        let request = parse(Some(&owned), Some(b"Ada"), TOPICS, LIMITS, &names).unwrap();
        assert_eq!(request.response_topic, "mine");
        assert_eq!(request.reply_partition, None);
        assert_eq!(request.correlation.header, "x-id");
    }

    #[test]
    fn plain_text_is_the_name_with_the_default_wait() {
        let request = parse_with(&[("correlation", b"c-1")], b"Ada").unwrap();
        assert_eq!(request.name, "Ada");
        assert_eq!(request.requested, Duration::from_millis(500));
        assert_eq!(request.correlation.value, b"c-1");
        assert_eq!(request.correlation.header, "correlation");
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
        assert!(
            request.correlation.is_empty(),
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
            parse_with(&[("responseTopic", b"\xff")], b"Ada"),
            Err(Unusable::HeaderNotUtf8("responseTopic".into()))
        );
        assert_eq!(
            parse_with(&[("responseTopic", b"no spaces")], b"Ada"),
            Err(Unusable::BadResponseTopic {
                header: "responseTopic".into(),
                topic: "no spaces".into()
            })
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
