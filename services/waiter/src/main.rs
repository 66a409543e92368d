//! `waiter`: service C. Wiring only; see the library for the pipeline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use waiter::{Application, Settings};

/// Consume wait requests from Kafka, wait, and reply.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// YAML settings layered over the defaults (also WAITER_BUS_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref())?;
    let telemetry = telemetry::init(telemetry::TelemetryConfig::service(
        "waiter",
        env!("CARGO_PKG_VERSION"),
        &settings.service.variant,
    ))?;
    let shutdown = service_kit::shutdown_on_signal();
    let app = Application::build(settings)
        .await
        .context("starting the waiter")?;
    let result = app.run_until_stopped(shutdown).await;
    telemetry.shutdown(Duration::from_secs(5));
    result.context("the waiter stopped with an error")
}
