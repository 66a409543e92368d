//! `kafka-dev` as a script would use it: start it, read the bootstrap line,
//! talk to it with an ordinary Kafka client from outside its process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Kills the child even when an assertion fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prints_bootstrap_first_and_serves_the_project_topics_to_another_process() {
    // `start` reads the line and closes the pipe, as `| head -1` would:
    // the broker must keep serving.
    let (_child, bootstrap) = start(&["--partitions", "3", "--topic", "extra-topic"]);
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");

    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let metadata = client
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata from kafka-dev");
    for topic in protocol::topics::ALL.iter().copied().chain(["extra-topic"]) {
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .unwrap_or_else(|| panic!("{topic} exists"));
        // The routes' offsets are their versions: always one partition.
        let expected = match topic {
            protocol::topics::TENANT_ROUTES => 1,
            _ => 3,
        };
        assert_eq!(
            found.partitions().len(),
            expected,
            "{topic} has the requested partitions"
        );
    }
}

#[test]
fn refuses_a_zero_partition_count_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_kafka-dev"))
        .args(["--partitions", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--partitions"), "{stderr}");
}

/// Starts `kafka-dev` with `args` and returns it with its bootstrap address.
fn start(args: &[&str]) -> (Running, String) {
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_kafka-dev"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("kafka-dev starts"),
    );
    let mut first_line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let bootstrap = first_line
        .trim()
        .strip_prefix("bootstrap.servers=")
        .unwrap_or_else(|| panic!("first line names the bootstrap servers: {first_line:?}"))
        .to_string();
    (child, bootstrap)
}

fn topic_config(bootstrap: &str, topic: &str, key: &str) -> Option<String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let results = futures_lite::future::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new()),
    )
    .unwrap();
    let resource = results.into_iter().next().unwrap().unwrap();
    resource.get(key).and_then(|entry| entry.value.clone())
}

fn produce_one(bootstrap: &str, topic: &str, payload: &str) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    producer
        .send(BaseRecord::<(), str>::to(topic).payload(payload))
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn high_watermark(bootstrap: &str, topic: &str) -> i64 {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    // Nothing is ever deleted here: the records held are the high watermark.
    kafka_kit::assign::records_in(&client, topic, Duration::from_secs(10)).unwrap()
}

fn jvm_running(data_dir: &std::path::Path) -> bool {
    let needle = data_dir.join("server.properties");
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle.to_str().unwrap()))
            .unwrap_or(false)
    })
}

#[test]
fn apache_kafka_serves_the_project_topics_and_keeps_its_data_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let (mut broker, bootstrap) = start(&["--apache", "--data-dir", data_dir]);
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");
    assert_eq!(
        topic_config(
            &bootstrap,
            protocol::topics::TENANT_ROUTES,
            "cleanup.policy"
        )
        .as_deref(),
        Some("compact"),
        "tenant-routes is compacted"
    );
    for topic in protocol::topics::ALL {
        assert!(high_watermark(&bootstrap, topic) >= 0, "{topic} exists");
    }
    produce_one(&bootstrap, protocol::topics::DEAD_LETTER, "kept");

    // SIGTERM stops kafka-dev and the JVM with it.
    assert!(embedded_kafka::signal(
        &broker.0,
        nix::sys::signal::Signal::SIGTERM
    ));
    let status = broker.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!jvm_running(data.path()), "the JVM stopped with kafka-dev");

    // The same data directory: the same address and the record still there.
    let (_broker, again) = start(&["--apache", "--data-dir", data_dir]);
    assert_eq!(again, bootstrap, "a restarted broker keeps its address");
    assert_eq!(high_watermark(&again, protocol::topics::DEAD_LETTER), 1);
}

#[test]
fn without_java_apache_mode_says_what_to_install_in_one_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_kafka-dev"))
        .arg("--apache")
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "no bootstrap line");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("java was not found") && stderr.contains("openjdk-17"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// A broker that dies with this process survives being restarted from a
/// thread that then ends (a tokio blocking-pool thread, say): the kernel
/// ties `PR_SET_PDEATHSIG` to the spawning thread, so before, the JVM was
/// killed as soon as that thread retired.
#[test]
fn a_broker_restarted_from_a_short_lived_thread_stays_up() {
    use embedded_kafka::apache::{ApacheKafka, ApacheKafkaOptions};
    let broker = std::sync::Mutex::new(
        ApacheKafka::start(ApacheKafkaOptions {
            die_with_parent: true,
            ..ApacheKafkaOptions::default()
        })
        .unwrap(),
    );
    std::thread::scope(|scope| {
        scope.spawn(|| broker.lock().unwrap().restart().unwrap());
    });
    // The restarting thread has ended; the broker must still serve.
    let broker = broker.into_inner().unwrap();
    let topic = format!("after-restart-{}", std::process::id());
    broker.create_topic(&topic, 1).unwrap();
    produce_one(&broker.bootstrap_servers(), &topic, "still here");
    assert_eq!(high_watermark(&broker.bootstrap_servers(), &topic), 1);
}
