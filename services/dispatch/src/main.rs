//! `dispatch`: service B. Wiring only.

service_kit::global_allocator!();

use std::path::PathBuf;

use clap::Parser;
use dispatch::{Application, Settings};

/// Publish wait requests to Kafka and await their replies.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// YAML settings layered over the defaults (also WAITER_BUS_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(Args::parse().config.as_deref())?;
    let variant = settings.service.variant.clone();
    service_kit::run_service(
        protocol::Service::Dispatch.as_str(),
        env!("CARGO_PKG_VERSION"),
        &variant,
        Application::build(settings),
        Application::run_until_stopped,
    )
    .await
}
