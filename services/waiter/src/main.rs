//! `waiter`: service C. Wiring only; see the library for the pipeline.

service_kit::global_allocator!();

use clap::Parser;
use waiter::{Application, Settings};

/// Consume wait requests from Kafka, wait, and reply.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: service_kit::ConfigArgs,
    /// Start an embedded Kafka broker in this process and use it (a build
    /// with the `embedded` feature, as the demo's and `load`'s are).
    #[arg(long)]
    embedded: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::load(args.config.config.as_deref())?;
    // Kept alive until the waiter has drained.
    let _broker = match args.embedded {
        true => Some(embedded::start(&mut settings)?),
        false => None,
    };
    service_kit::run::<Application>(settings).await
}

#[cfg(not(feature = "embedded"))]
mod embedded {
    /// What a build without the broker says to `--embedded`.
    pub(crate) fn start(_: &mut waiter::Settings) -> anyhow::Result<()> {
        anyhow::bail!(
            "this waiter was built without the embedded broker; build it with \
             `cargo run -p waiter --features embedded -- --embedded`, or run the \
             whole demo with `cargo run --release -p demo`"
        )
    }
}

#[cfg(feature = "embedded")]
mod embedded {
    use anyhow::Context;
    use embedded_kafka::{EmbeddedKafka, EmbeddedKafkaOptions};
    use waiter::Settings;

    pub(crate) fn start(settings: &mut Settings) -> anyhow::Result<EmbeddedKafka> {
        let broker = EmbeddedKafka::start(EmbeddedKafkaOptions {
            group_initial_rebalance_delay_ms: 250,
            ..EmbeddedKafkaOptions::default()
        })
        .context("starting the embedded broker")?;
        let b = broker.bootstrap_servers();
        // Tuned for the mock's habits (see `EmbeddedKafka::client_settings`),
        // as the tests and the demo are.
        settings.kafka = settings
            .kafka
            .clone()
            .overlaid_with(&broker.client_settings());
        let requests = &settings.waiter.request_topic;
        let replies = &settings.waiter.default_response_topic;
        println!("embedded Kafka broker: bootstrap.servers={b}");
        println!("send a request and read the reply (kcat, from Debian's `kcat` package):");
        println!(
            "  echo '{{\"name\":\"Ada\",\"wait_ms\":250}}' | kcat -b {b} -P -t {requests} -H correlation=abc -H responseTopic={replies}"
        );
        println!("  kcat -b {b} -C -t {replies} -o beginning -f '%k %h\\n%s\\n\\n'");
        println!(
            "metrics: http://localhost:{}/metrics   Ctrl-C stops",
            settings.http.port
        );
        Ok(broker)
    }
}
