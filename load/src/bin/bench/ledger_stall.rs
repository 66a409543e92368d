//! `--ledger-stall`: the ledger frozen (SIGSTOP) under load, as a hung
//! downstream is; the waiter's throughput before, during and after.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use load::LoadModel;

use crate::args::Args;
use crate::broker::*;
use crate::measure::*;
use crate::responder::*;

/// A ledger process beside this binary, killed on drop.
struct LedgerProcess {
    child: Child,
    url: String,
}

impl LedgerProcess {
    async fn start() -> anyhow::Result<Self> {
        let binary = std::env::current_exe()?
            .parent()
            .context("the bench binary has a folder")?
            .join("ledger");
        anyhow::ensure!(
            binary.exists(),
            "{} not found: build it first with `cargo build --release -p ledger -p waiter -p load`",
            binary.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .env("WAITER_BUS__HTTP__HOST", "127.0.0.1")
            .env("WAITER_BUS__HTTP__PORT", port.to_string())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let ledger = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{}/healthz", ledger.url))
            .send()
            .await
            .is_err()
        {
            anyhow::ensure!(Instant::now() < deadline, "the ledger did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(ledger)
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a process that takes
    /// connections and never answers, as a hung service does.
    fn freeze(&self, frozen: bool) -> anyhow::Result<()> {
        use nix::sys::signal::Signal;
        let signal = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        anyhow::ensure!(
            embedded_kafka::signal(&self.child, signal),
            "signalling the ledger failed"
        );
        Ok(())
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        let _ = self.freeze(false);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open-loop load through a waiter (the Go app's 50 waiters) that records
/// every wait in a ledger; the ledger is frozen for `--outage-seconds`
/// after `--seconds`. A downstream that hangs must cost
/// `ledger_recorded: false`, not throughput.
pub(crate) async fn ledger_stall(broker: &Broker, args: &Args) -> anyhow::Result<()> {
    let ledger = LedgerProcess::start().await?;
    let url = ledger.url.clone();
    let env = [("WAITER_BUS__LEDGER__URL", url.as_str())];
    let waiter = Responder::Waiter {
        waiters: 50,
        env: &env,
    }
    .start(broker, "ledger-stall")
    .await?;
    let stall_at = Duration::from_secs(args.seconds.max(5));
    let stall_for = Duration::from_secs(args.outage_seconds);
    let run_for = stall_at * 2 + stall_for;
    let rate = args.loss_rate;
    let load = config(
        broker.bootstrap_servers(),
        &waiter.topics,
        LoadModel::Open { rate },
        run_for,
        100,
    );
    eprintln!(
        "ledger stall: {rate:.0} req/s of 100 ms waits for {} s; the ledger frozen from {} s for {} s",
        run_for.as_secs(),
        stall_at.as_secs(),
        stall_for.as_secs()
    );
    let generator = tokio::spawn(load::run(load));
    tokio::time::sleep(stall_at).await;
    ledger.freeze(true)?;
    tokio::time::sleep(stall_for).await;
    ledger.freeze(false)?;
    let report = generator.await??;
    let c = &report.counts;
    let window = |from: u64, to: u64| steady_throughput(&report, from, to);
    let (stall_start, stall_end) = (stall_at.as_secs(), (stall_at + stall_for).as_secs());
    println!(
        "ledger stall (SIGSTOP for {} s under load)",
        stall_for.as_secs()
    );
    println!(
        "  sent {}  answered {}  timed out {}  counts add up: {}",
        c.sent,
        c.received,
        c.timed_out,
        c.add_up()
    );
    println!(
        "  replies/s: before {:.0}, while frozen {:.0}, after {:.0} (offered {rate:.0})",
        window(1, stall_start),
        window(stall_start + 1, stall_end),
        window(stall_end + 1, run_for.as_secs()),
    );
    println!("  per second (received, p99 ms):");
    for second in &report.timeline {
        println!(
            "    {:>3} s  {:>6}  {:>9.1}",
            second.second, second.received, second.p99_ms
        );
    }
    drop(waiter);
    Ok(())
}
