//! `churn`: tenancy under change, measured. Runs the whole stack in this
//! process on the embedded broker (or on `KAFKA_BOOTSTRAP_SERVERS`, e.g.
//! `kafka-dev --apache`, with topics of its own), sends a tenant's traffic
//! through the gateway while its mapping is re-written and deleted and its
//! waiter variant scales out, loses its instances and returns, and reports
//! lost, wrong-variant and duplicated requests (see `demo::churn`).
//!
//! ```text
//! cargo run --release -p load --bin churn -- --requests 1200 --rate 40
//! ```

use std::process::ExitCode;

use clap::Parser;
use demo::churn::{ChurnOptions, ChurnReport};

/// Tenancy under change: lost, wrong-variant and duplicated requests.
#[derive(Parser)]
struct Args {
    /// Requests in all; the scenario's steps happen at fixed fractions.
    #[arg(long, default_value_t = 1200)]
    requests: usize,
    /// Requests per second.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// The wait each request asks for, in milliseconds.
    #[arg(long, default_value_t = 10)]
    wait_ms: u64,
    /// Crash waiter instances instead of stopping them: the variant's
    /// waiters run as processes of the `waiter` binary built beside this
    /// one (`cargo build --release -p waiter`) and are sent SIGKILL.
    #[arg(long)]
    kill: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The `waiter` executable in this binary's directory.
fn waiter_beside_this_binary() -> anyhow::Result<std::path::PathBuf> {
    let here = std::env::current_exe()?;
    let waiter = here.with_file_name("waiter");
    anyhow::ensure!(
        waiter.is_file(),
        "--kill runs the variant's waiters as processes, and {} does not exist: build it with `cargo build --release -p waiter`",
        waiter.display()
    );
    Ok(waiter)
}

fn print(report: &ChurnReport, broker: &str) {
    println!("churn on {broker}: {} requests", report.sent);
    for step in &report.steps {
        println!("  at request {step}");
    }
    println!("  answered                 {}", report.answered);
    println!("  lost                     {}", report.lost);
    println!("  answered by wrong variant {}", report.wrong_variant);
    println!(
        "  processed by two groups  {}",
        report.processed_by_two_groups
    );
    println!("  redelivered in one group {}", report.redelivered);
    println!("  answered, not witnessed  {}", report.unwitnessed);
    for example in &report.examples {
        println!("  e.g. {example}");
    }
    let verdict = match report.held() {
        true => "held",
        false => "BROKEN",
    };
    println!("tenancy {verdict}");
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let mut telemetry_config =
        telemetry::TelemetryConfig::service("churn", env!("CARGO_PKG_VERSION"), "baseline");
    telemetry_config.log_output = telemetry::LogOutput::Stderr;
    let _telemetry = telemetry::init(telemetry_config)?;
    let (embedded, kafka, broker) = match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(bootstrap) => (
            None,
            kafka_kit::KafkaSettings::new(bootstrap.clone()),
            format!("Kafka at {bootstrap}"),
        ),
        Err(_) => {
            let embedded = embedded_kafka::EmbeddedKafka::start(Default::default())?;
            let kafka = embedded.client_settings();
            (Some(embedded), kafka, "the embedded broker".to_string())
        }
    };
    let names = demo::StackNames::unique("churn", &uuid::Uuid::new_v4().simple().to_string());
    names
        .create_topics(embedded.as_ref(), &kafka.bootstrap_servers)
        .await?;
    let waiter_binary = match args.kill {
        true => Some(waiter_beside_this_binary()?),
        false => None,
    };
    let options = demo::StackOptions {
        names,
        waiter_binary,
        ..demo::StackOptions::default()
    };
    let mut stack = demo::Stack::start(&kafka, options).await?;
    let churn = ChurnOptions {
        requests: args.requests,
        rate: args.rate,
        wait_ms: args.wait_ms,
        kill: args.kill,
        ..ChurnOptions::default()
    };
    eprintln!(
        "churn: {} requests at {}/s on {broker}…",
        churn.requests, churn.rate
    );
    let report = demo::churn::run(&mut stack, &churn).await?;
    stack.stop().await?;
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => print(&report, &broker),
    }
    Ok(match report.held() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}
