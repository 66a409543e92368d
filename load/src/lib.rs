//! `load`: request/reply load over Kafka that measures what an application
//! cannot measure about itself: end-to-end latency from each request's
//! *intended* send time (so a stall is not hidden), lost replies, duplicates,
//! and where the time went, hop by hop.
//!
//! Start with [`run`] and its [`Config`]; the result is a [`report::Report`]
//! whose counts always add up (`sent = received + timed_out + in_flight`).
//! The engine sends exactly what the Go waiter's JMeter plan sent: records on
//! `Waiter-Requests` with `correlation`, `responseTopic`, `traceparent` and
//! `baggage`, and it reads every reply on the response topic by assignment,
//! matching each to its request.

mod engine;
pub mod html;
pub mod report;

use std::time::Duration;

pub use engine::run;
pub use report::{Report, Slo};

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadModel {
    /// Open loop: requests are scheduled at this rate whatever the replies do.
    Open {
        /// Requests per second.
        rate: f64,
    },
    /// Closed loop: each user sends, waits for its reply (or timeout), repeats.
    Closed {
        /// Concurrent users.
        users: usize,
    },
}

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Produce to the request topic and match replies on the response topic.
    Kafka,
    /// `POST {url}/wait` on the gateway (A).
    Http {
        /// The gateway's base URL.
        url: String,
    },
}

/// How long each request asks the waiter to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitSpec {
    /// Always this many milliseconds.
    Fixed(u64),
    /// Uniformly between the two bounds, inclusive.
    Uniform(u64, u64),
}

impl std::str::FromStr for WaitSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("{text:?}: expected milliseconds like 100 or 10..200"))
        };
        match text.split_once("..") {
            None => Ok(WaitSpec::Fixed(number(text)?)),
            Some((low, high)) => {
                let (low, high) = (number(low)?, number(high)?);
                if low > high {
                    return Err(format!("{text:?}: the lower bound is above the upper"));
                }
                Ok(WaitSpec::Uniform(low, high))
            }
        }
    }
}

impl WaitSpec {
    fn sample(self) -> u64 {
        match self {
            WaitSpec::Fixed(ms) => ms,
            WaitSpec::Uniform(low, high) => fastrand::u64(low..=high),
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kafka or HTTP.
    pub target: Target,
    /// The broker.
    pub bootstrap_servers: String,
    /// Where requests go.
    pub request_topic: String,
    /// Where replies are read (and what requests name as `responseTopic`).
    pub response_topic: String,
    /// Open or closed loop.
    pub model: LoadModel,
    /// How long requests are sent.
    pub duration: Duration,
    /// Open loop: the rate rises linearly from near 0 over this time.
    pub ramp_up: Duration,
    /// The wait each request asks for.
    pub wait: WaitSpec,
    /// Tenant put in the baggage, if any.
    pub tenant: Option<String>,
    /// Filler added to each request body, in bytes.
    pub payload_bytes: usize,
    /// A request with no reply after this long is timed out.
    pub timeout: Duration,
    /// Send each request's deadline (`waiter-bus-deadline`: send time plus
    /// `timeout`), so the waiter drops work nobody waits for any more. Off,
    /// requests look like the Go app's and JMeter's, which send none.
    pub deadline: bool,
    /// The share of requests whose trace is sampled (the `traceparent`
    /// flag the application follows) when the generator does not export
    /// spans itself; by default what `OTEL_TRACES_SAMPLER` and
    /// `OTEL_TRACES_SAMPLER_ARG` say ([`sample_ratio_from_env`]).
    pub sample_ratio: f64,
    /// Draw a live progress line on stderr.
    pub progress: bool,
    /// Make each request a root INTERNAL span `load.request` (its round
    /// trip, with a `reply.received` event) and produce its record in a
    /// PRODUCER `send` child whose context the record carries, so the
    /// generator and the application form one trace. Worth it only when
    /// spans are exported.
    pub trace: bool,
    /// librdkafka properties for the generator's producer, applied after its
    /// defaults (`acks=all`, `linger.ms=1`), e.g. `linger.ms=5` to batch.
    pub producer_properties: Vec<(String, String)>,
    /// librdkafka properties for the generator's reply consumer, applied
    /// after its defaults (`fetch.wait.max.ms=5`).
    pub consumer_properties: Vec<(String, String)>,
}

/// The librdkafka properties a services-style settings file gives its
/// clients (its `kafka.client` map, with `kafka.producer` or
/// `kafka.consumer` over it), for a generator configured like the services
/// it loads, e.g. the low-latency profile (`config/low-latency.yaml`).
/// The file's other sections are not the generator's and are left alone.
pub fn client_properties(path: &std::path::Path) -> Result<ClientProperties, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::Invalid(format!("{}: {e}", path.display())))?;
    client_properties_in(&text).map_err(|e| LoadError::Invalid(format!("{}: {e}", path.display())))
}

/// The generator's producer and reply-consumer properties from a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientProperties {
    /// For [`Config::producer_properties`].
    pub producer: Vec<(String, String)>,
    /// For [`Config::consumer_properties`].
    pub consumer: Vec<(String, String)>,
}

/// [`client_properties`] of a settings file's text.
pub fn client_properties_in(text: &str) -> Result<ClientProperties, serde_yaml::Error> {
    use std::collections::BTreeMap;
    #[derive(serde::Deserialize, Default)]
    struct Kafka {
        #[serde(default)]
        client: BTreeMap<String, String>,
        #[serde(default)]
        producer: BTreeMap<String, String>,
        #[serde(default)]
        consumer: BTreeMap<String, String>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        kafka: Kafka,
    }
    let file: File = serde_yaml::from_str(text)?;
    let with = |role: BTreeMap<String, String>| {
        let mut all = file.kafka.client.clone();
        all.extend(role);
        all.into_iter().collect()
    };
    Ok(ClientProperties {
        producer: with(file.kafka.producer.clone()),
        consumer: with(file.kafka.consumer.clone()),
    })
}

/// The root sampling ratio the standard variables name: 0 for
/// `always_off`, `OTEL_TRACES_SAMPLER_ARG` for the ratio samplers, else 1.
pub fn sample_ratio_from_env() -> f64 {
    let arg = || {
        std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(1.0, |r| r.clamp(0.0, 1.0))
    };
    match std::env::var("OTEL_TRACES_SAMPLER")
        .as_deref()
        .map(str::trim)
    {
        Ok("always_off" | "parentbased_always_off") => 0.0,
        Ok("traceidratio" | "parentbased_traceidratio") => arg(),
        _ => 1.0,
    }
}

impl Config {
    /// A short open-loop run against `bootstrap_servers` with the project's topics.
    pub fn new(bootstrap_servers: &str) -> Self {
        Self {
            target: Target::Kafka,
            bootstrap_servers: bootstrap_servers.to_string(),
            request_topic: protocol::topics::REQUESTS.into(),
            response_topic: protocol::topics::RESPONSES.into(),
            model: LoadModel::Open { rate: 100.0 },
            duration: Duration::from_secs(10),
            ramp_up: Duration::ZERO,
            wait: WaitSpec::Fixed(10),
            tenant: None,
            payload_bytes: 0,
            timeout: Duration::from_secs(5),
            deadline: true,
            sample_ratio: sample_ratio_from_env(),
            progress: false,
            trace: false,
            producer_properties: Vec::new(),
            consumer_properties: Vec::new(),
        }
    }
}

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A Kafka client could not be created or assigned.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The response topic does not exist.
    #[error("response topic `{0}` does not exist")]
    NoResponseTopic(String),
    /// The settings make no sense.
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settings_file_gives_the_generator_its_client_properties() {
        let profile =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/low-latency.yaml");
        let properties = client_properties(&profile).unwrap();
        let has = |list: &[(String, String)], key: &str, value: &str| {
            list.iter().any(|(k, v)| k == key && v == value)
        };
        assert!(
            has(&properties.producer, "linger.ms", "0"),
            "{properties:?}"
        );
        // `kafka.client` goes to both; a role's own map wins over it.
        assert!(has(&properties.producer, "socket.nagle.disable", "true"));
        assert!(has(&properties.consumer, "socket.nagle.disable", "true"));
        let text = "kafka:\n  client: {linger.ms: \"5\"}\n  producer: {linger.ms: \"0\"}\nwaiter: {waiters: 3}\n";
        let properties = client_properties_in(text).unwrap();
        assert_eq!(
            properties.producer,
            [("linger.ms".to_string(), "0".to_string())]
        );
        assert!(client_properties(std::path::Path::new("/nonexistent.yaml")).is_err());
    }
}
