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
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_kafka-dev"))
            .args(["--partitions", "3", "--topic", "extra-topic"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("kafka-dev starts"),
    );
    let mut first_line = String::new();
    // Read the line and close the pipe, as `| head -1` would: the broker
    // must keep serving.
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let bootstrap = first_line
        .trim()
        .strip_prefix("bootstrap.servers=")
        .unwrap_or_else(|| panic!("first line names the bootstrap servers: {first_line:?}"));
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");

    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let metadata = client
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata from kafka-dev");
    for topic in kafka_kit::topics::ALL
        .iter()
        .copied()
        .chain(["extra-topic"])
    {
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .unwrap_or_else(|| panic!("{topic} exists"));
        assert_eq!(
            found.partitions().len(),
            3,
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
