//! `tenants`: the tenants registry. Wiring only.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tenants::{Application, Settings};

/// Manage tenants, their variant mappings and variant endpoints.
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
        "tenants",
        env!("CARGO_PKG_VERSION"),
        telemetry::BASELINE_VARIANT,
    ))?;
    let shutdown = service_kit::shutdown_on_signal();
    let app = Application::build(settings)
        .await
        .context("starting the tenants registry")?;
    let result = app.run_until_stopped(shutdown).await;
    telemetry.shutdown(Duration::from_secs(5));
    result.context("the tenants registry stopped with an error")
}
