//! `kafka-dev`: serves an embedded Kafka broker on localhost until Ctrl-C.
//!
//! Its only stdout line is `bootstrap.servers=HOST:PORT`, for scripts;
//! everything else goes to stderr.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use embedded_kafka::{EmbeddedKafka, EmbeddedKafkaOptions};

/// Serve an embedded Kafka broker (librdkafka's mock cluster) on localhost.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Partitions for each of the project's topics.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1000))]
    partitions: i32,
    /// Number of mock brokers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=9))]
    brokers: i32,
    /// Consumer-group initial rebalance delay. Members joining an empty group
    /// within it share the first generation; later joiners trigger a
    /// rebalance that this broker settles in `session.timeout.ms` − 1 s.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(i32).range(0..=60_000))]
    group_rebalance_delay_ms: i32,
    /// Extra topics to create beside the project's own.
    #[arg(long = "topic", value_name = "NAME")]
    extra_topics: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut options = EmbeddedKafkaOptions {
        brokers: args.brokers,
        partitions: args.partitions,
        group_initial_rebalance_delay_ms: args.group_rebalance_delay_ms,
        ..EmbeddedKafkaOptions::default()
    };
    options.topics.extend(args.extra_topics);
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    let broker = EmbeddedKafka::start(options.clone()).context("starting the embedded broker")?;
    // Only the bootstrap line goes to stdout, and a closed stdout (a script
    // that read the line and moved on, `| head -1`) must not stop the broker.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "bootstrap.servers={}", broker.bootstrap_servers());
    let _ = out.flush();
    drop(out);
    eprintln!(
        "kafka-dev: topics {} ({} partitions each); Ctrl-C stops",
        options.topics.join(", "),
        options.partitions
    );

    let _ = stop_rx.recv();
    eprintln!("kafka-dev: stopping");
    drop(broker);
    Ok(())
}
