//! `kafka-dev`: serves a Kafka broker on localhost until Ctrl-C or SIGTERM:
//! the embedded one (librdkafka's mock cluster, in this process) by default,
//! a real Apache Kafka (a JVM this process owns) with `--apache`.
//!
//! Its only stdout line is `bootstrap.servers=HOST:PORT`, for scripts;
//! everything else goes to stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use embedded_kafka::apache::{self, ApacheKafka, ApacheKafkaOptions};
use embedded_kafka::{EmbeddedKafka, EmbeddedKafkaOptions};

/// Serve a Kafka broker on localhost: the embedded one (librdkafka's mock
/// cluster), or with --apache a real Apache Kafka in KRaft mode (one node,
/// or with --brokers 3 a cluster: replication factor 3, min.insync.replicas 2).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Run a real Apache Kafka broker (a JVM; needs Java 17+, and Maven the
    /// first time, to download the broker from Maven Central into the cache).
    #[arg(long)]
    apache: bool,
    /// With --apache: keep the broker's data here across restarts (the same
    /// cluster, topics, offsets and port come back). Default: a temporary
    /// directory removed on exit.
    #[arg(long, value_name = "DIR", requires = "apache")]
    data_dir: Option<PathBuf>,
    /// With --apache: the client port on 127.0.0.1 (default: a free one, or
    /// the one the data directory had). In a cluster, the first node's; the
    /// others take the ports after it.
    #[arg(long, requires = "apache", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Partitions for each of the project's topics.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1000))]
    partitions: i32,
    /// Number of brokers. With --apache, each is a JVM acting as broker and
    /// KRaft controller; 3 or more give the project's topics replication
    /// factor 3 and min.insync.replicas 2, as production clusters run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=9))]
    brokers: i32,
    /// Consumer-group initial rebalance delay. Members joining an empty group
    /// within it share the first generation; later joiners trigger a
    /// rebalance (which the embedded broker settles in `session.timeout.ms` − 1 s).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(i32).range(0..=60_000))]
    group_rebalance_delay_ms: i32,
    /// Extra topics to create beside the project's own.
    #[arg(long = "topic", value_name = "NAME")]
    extra_topics: Vec<String>,
}

/// Either broker; dropping it stops it.
enum Broker {
    Embedded(EmbeddedKafka),
    Apache(ApacheKafka),
}

fn main() -> std::process::ExitCode {
    // One line per failure (`context: cause`), so a missing Java or Maven
    // reads as one instruction.
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafka-dev: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut topics = embedded_kafka::project_topics();
    topics.extend(args.extra_topics.iter().cloned());
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    let (broker, bootstrap) = if args.apache {
        let broker = ApacheKafka::start(ApacheKafkaOptions {
            data_dir: args.data_dir.clone(),
            port: args.port,
            brokers: args.brokers as usize,
            partitions: args.partitions,
            topics: topics.clone(),
            group_initial_rebalance_delay_ms: args.group_rebalance_delay_ms,
            // The JVM must not outlive this process, however it ends.
            die_with_parent: true,
        })
        .with_context(|| format!("starting Apache Kafka {}", apache::version()))?;
        let shape = match args.brokers {
            1 => "one node".to_string(),
            n => format!("{n} nodes, replication factor {}", n.min(3)),
        };
        eprintln!(
            "kafka-dev: Apache Kafka {} (KRaft, {shape}), data in {}, logs in {}",
            apache::version(),
            broker.data_dir().display(),
            match args.brokers {
                1 => broker.log_file().display().to_string(),
                _ => format!("{}/node-*/broker.log", broker.data_dir().display()),
            }
        );
        let bootstrap = broker.bootstrap_servers();
        (Broker::Apache(broker), bootstrap)
    } else {
        let broker = EmbeddedKafka::start(EmbeddedKafkaOptions {
            brokers: args.brokers,
            partitions: args.partitions,
            topics: topics.clone(),
            group_initial_rebalance_delay_ms: args.group_rebalance_delay_ms,
        })
        .context("starting the embedded broker")?;
        let bootstrap = broker.bootstrap_servers().to_string();
        (Broker::Embedded(broker), bootstrap)
    };
    // Only the bootstrap line goes to stdout, and a closed stdout (a script
    // that read the line and moved on, `| head -1`) must not stop the broker.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "bootstrap.servers={bootstrap}");
    let _ = out.flush();
    drop(out);
    eprintln!(
        "kafka-dev: topics {} ({} partitions each); Ctrl-C stops",
        topics.join(", "),
        args.partitions
    );

    match broker {
        Broker::Embedded(broker) => {
            let _ = stop_rx.recv();
            eprintln!("kafka-dev: stopping");
            drop(broker);
        }
        Broker::Apache(mut broker) => {
            // Wake up now and then to notice a node that died. A single
            // broker's death ends the run; a cluster serves on without the
            // node (killing one is how failover is tried), until none is left.
            loop {
                match stop_rx.recv_timeout(std::time::Duration::from_millis(500)) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let Some((node, status)) = broker.try_exit_status() else {
                            continue;
                        };
                        let log = broker
                            .node_log_file(node)
                            .unwrap_or_else(|| broker.log_file());
                        broker.forget_exited(node);
                        let running = broker
                            .node_ids()
                            .into_iter()
                            .filter(|&id| broker.node_running(id))
                            .count();
                        if running == 0 {
                            anyhow::bail!(
                                "Apache Kafka node {node} exited by itself ({status}) and no node is left; see {}",
                                log.display()
                            );
                        }
                        eprintln!(
                            "kafka-dev: Apache Kafka node {node} exited ({status}); {running} of {} nodes serve on (its log: {})",
                            args.brokers,
                            log.display()
                        );
                    }
                }
            }
            eprintln!("kafka-dev: stopping Apache Kafka");
            broker.stop();
        }
    }
    Ok(())
}
