//! The command line.

use std::path::PathBuf;

use clap::Parser;

/// Measure the waiter's performance figures on this machine.
#[derive(Debug, Parser)]
#[command(version)]
pub(crate) struct Args {
    /// Seconds per throughput or latency phase.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Seconds of overload in the memory phase.
    #[arg(long, default_value_t = 60)]
    pub(crate) overload_seconds: u64,
    /// Closed-loop user counts tried for each maximum throughput; the best
    /// is the maximum (past the knee, more users only add queueing).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000, 3000])]
    pub(crate) users: Vec<usize>,
    /// Write the figures to this JSON file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Take the figures on a real Apache Kafka this run starts (the broker
    /// `kafka-dev --apache` runs; needs Java) instead of the embedded one.
    #[arg(long, conflicts_with = "broker_loss")]
    pub(crate) apache: bool,
    /// Instead of the figures: broker loss on a real Apache Kafka this run
    /// starts. Open-loop load through a waiter; the broker is killed with
    /// SIGKILL mid-load and restarted on its data directory; prints replies
    /// lost, duplicates and the time to recover.
    #[arg(long)]
    pub(crate) broker_loss: bool,
    /// Instead of the figures: one broker of a 3-node Apache Kafka cluster
    /// this run starts (replication factor 3, min.insync.replicas 2) killed
    /// with SIGKILL under open-loop load through a waiter, and restarted:
    /// the partitions' leader, the reply partitions' leader, the waiter's
    /// group coordinator, or a broker and the waiter together (see
    /// `--cases`). Prints lost, duplicates, the longest pause in replies,
    /// the time to recover and the maximum latency for each run.
    #[arg(long, conflicts_with_all = ["broker_loss", "apache"])]
    pub(crate) cluster_loss: bool,
    /// Cluster loss: which brokers to kill, each run `--runs` times.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = crate::cluster_loss::Victim::ALL)]
    pub(crate) cases: Vec<crate::cluster_loss::Victim>,
    /// Cluster loss: runs per case.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) runs: u32,
    /// Cluster loss: seconds of load in each run (the kill comes at a
    /// quarter of it, the restart at half).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(20..=3600))]
    pub(crate) run_seconds: u64,
    /// Instead of the figures: a ledger frozen (SIGSTOP) under load.
    /// Open-loop load through a waiter that records every wait in a ledger
    /// process; prints replies per second before, during and after.
    #[arg(long, conflicts_with = "broker_loss")]
    pub(crate) ledger_stall: bool,
    /// Instead of the figures: the reply topic refusing writes under load
    /// (`--stall-rate` req/s, for `--outage-seconds`), on the embedded
    /// broker: the reply partitions' broker of two is taken down. Prints
    /// the waiter's RSS before and during the stall, requests left in Kafka
    /// meanwhile, and lost and duplicate replies.
    #[arg(long, conflicts_with_all = ["broker_loss", "cluster_loss", "apache", "ledger_stall"])]
    pub(crate) reply_stall: bool,
    /// Reply stall: offered rate (req/s).
    #[arg(long, default_value_t = 2000.0)]
    pub(crate) stall_rate: f64,
    /// Instead of the figures: the highest open-loop rate whose p99 and
    /// error share stay within the objective (`--objective-p99-ms`,
    /// `--objective-errors`), found by doubling and then bisecting.
    #[arg(long, conflicts_with_all = ["broker_loss", "ledger_stall"])]
    pub(crate) max_rate: bool,
    /// Instead of the figures: end-to-end latency at 1,000 req/s (wait 0)
    /// with the shipped defaults and with the low-latency profile
    /// (`config/low-latency.yaml`), `--seconds` each (at least 10).
    #[arg(long, conflicts_with_all = ["broker_loss", "cluster_loss", "ledger_stall", "reply_stall", "max_rate"])]
    pub(crate) low_latency: bool,
    /// Max rate: the p99 latency objective, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) objective_p99_ms: f64,
    /// Max rate: the share of requests that may time out or fail (0.001 = 0.1 %).
    #[arg(long, default_value_t = 0.001)]
    pub(crate) objective_errors: f64,
    /// Max rate: the first rate tried (req/s).
    #[arg(long, default_value_t = 2000.0)]
    pub(crate) start_rate: f64,
    /// Max rate: at most this many steps.
    #[arg(long, default_value_t = 10)]
    pub(crate) rate_steps: usize,
    /// Max rate: the wait each request asks for, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) rate_wait_ms: u64,
    /// Max rate: the waiter's concurrent waits.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) rate_waiters: usize,
    /// Broker loss / ledger stall: offered rate (req/s).
    #[arg(long, default_value_t = 500.0)]
    pub(crate) loss_rate: f64,
    /// Broker loss / ledger stall: seconds the broker is down or the ledger frozen.
    #[arg(long, default_value_t = 5)]
    pub(crate) outage_seconds: u64,
    /// Internal: be the bare echo, configured like a waiter by this file and
    /// the `WAITER_BUS__…` environment.
    #[arg(long, hide = true, value_name = "CONFIG")]
    pub(crate) echo: Option<PathBuf>,
}
