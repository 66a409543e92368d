//! `demo`: the whole flow on one machine with nothing but cargo. Starts a
//! broker (embedded unless `KAFKA_BOOTSTRAP_SERVERS` is set), the registry,
//! A, B, C, D and a tenant's B″ and C″; sends a baseline and a tenant
//! request; draws both traces and the hop table; then serves A until Ctrl-C.

service_kit::global_allocator!();

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use demo::{Stack, StackOptions};
use embedded_kafka::{EmbeddedKafka, EmbeddedKafkaOptions};
use kafka_kit::KafkaSettings;
use protocol::Service;

/// Run waiter-bus end to end in one process and show where each request went.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The gateway's (A's) port; when taken, any free port is used instead.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The tenant given its own B″ and C″ (variant label `sbx-<tenant>`).
    #[arg(long, default_value = "123")]
    tenant: String,
    /// How long each demo request asks the waiter to wait, in ms.
    #[arg(long, default_value_t = 200)]
    wait_ms: u64,
    /// Send the two requests, draw them, and exit instead of serving.
    #[arg(long)]
    once: bool,
    /// Use topics and consumer groups of this run's own instead of the
    /// project's (for several demos on one shared broker, as the tests run
    /// them); they are created at start.
    #[arg(long)]
    isolated: bool,
    /// The web console's port; when taken, any free port is used instead.
    #[arg(long, default_value_t = 8086)]
    console_port: u16,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("demo: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // One process, every service: each exports under its own service.name.
    let mut telemetry_config =
        telemetry::TelemetryConfig::service("demo", env!("CARGO_PKG_VERSION"), "baseline")
            .hosting_every_service();
    // stdout is the demo's own output; log lines only when asked for.
    telemetry_config.log_output = match std::env::var_os("RUST_LOG") {
        Some(_) => telemetry::LogOutput::Stderr,
        None => telemetry::LogOutput::Off,
    };
    telemetry_config.span_sink_capacity = 20_000;
    let telemetry = telemetry::init(telemetry_config)?;

    let (kafka, broker) = match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(bootstrap) if !bootstrap.trim().is_empty() => {
            println!("Kafka: {bootstrap} (from KAFKA_BOOTSTRAP_SERVERS)");
            (KafkaSettings::new(bootstrap.trim()), None)
        }
        _ => {
            let broker = EmbeddedKafka::start(EmbeddedKafkaOptions::default())
                .context("starting the embedded broker")?;
            let kafka = broker.client_settings();
            println!(
                "Kafka: embedded broker at {} (set KAFKA_BOOTSTRAP_SERVERS to use another)",
                broker.bootstrap_servers()
            );
            (kafka, Some(broker))
        }
    };
    if telemetry.otlp_enabled() {
        println!(
            "traces: also exported over OTLP to {}",
            std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default()
        );
    }

    println!("starting registry, ledger (D), waiter (C), dispatch (B), gateway (A)…");
    // A taken port should not stop a newcomer's first run; checked before
    // anything starts so nothing is started twice.
    let port =
        match args.port != 0 && std::net::TcpListener::bind(("127.0.0.1", args.port)).is_err() {
            true => {
                println!("port {} is taken; using any free port", args.port);
                0
            }
            false => args.port,
        };
    let mut options = StackOptions {
        gateway_port: port,
        ..StackOptions::default()
    };
    if args.isolated {
        let names = demo::StackNames::unique("demo", &uuid::Uuid::new_v4().simple().to_string());
        names
            .create_topics(broker.as_ref(), &kafka.bootstrap_servers)
            .await?;
        println!("topics and groups of this run's own: {}-…", names.requests);
        options.names = names;
    }
    let mut stack = Stack::start(&kafka, options).await?;
    let label = format!("sbx-{}", args.tenant);
    println!(
        "starting tenant {}'s variants: dispatch and waiter `{label}`…",
        args.tenant
    );
    stack.start_variant(&label, true, true).await?;
    stack
        .map(
            &args.tenant,
            &[
                (Service::Dispatch.as_str(), &label),
                (Service::Waiter.as_str(), &label),
            ],
        )
        .await?;

    let baseline = stack.send(None, "demo", args.wait_ms).await?;
    let tenant = stack.send(Some(&args.tenant), "demo", args.wait_ms).await?;
    let mut columns = Vec::new();
    for (title, response) in [
        ("baseline request".to_string(), &baseline),
        (format!("tenant {} request", args.tenant), &tenant),
    ] {
        let spans = demo::whole_trace(telemetry.spans(), &response.trace_id).await?;
        println!();
        println!(
            "── {title}{} · waited {} ms of {} asked · {}",
            response
                .tenant
                .as_deref()
                .map(|t| format!(" (baggage tenant={t})"))
                .unwrap_or_default(),
            response.reply.waited_ms,
            response.reply.requested_wait_ms,
            response
                .reply
                .behaviour
                .as_deref()
                .unwrap_or("baseline behaviour"),
        );
        print!("{}", demo::waterfall::render_trace(&spans));
        columns.push((title, demo::waterfall::hops(&spans)));
    }
    println!();
    let columns: Vec<(&str, &[(String, String)])> = columns
        .iter()
        .map(|(title, hops)| (title.as_str(), hops.as_slice()))
        .collect();
    print!("{}", demo::waterfall::render_hops(&columns));

    if !args.once {
        let body = format!(r#"{{"name":"you","wait_ms":{}}}"#, args.wait_ms);
        let console_port = match args.console_port {
            0 => 0,
            wanted if std::net::TcpListener::bind(("127.0.0.1", wanted)).is_ok() => wanted,
            _ => 0,
        };
        let console = stack.start_console(console_port, telemetry.spans()).await?;
        println!();
        println!("console: {console}  (live flow, send requests, tenants, the waiter's pipeline;");
        println!(
            "         the registry token for changes is `{}`)",
            demo::StackOptions::default().token
        );
        println!();
        println!("gateway (A) listening on {}; try:", stack.gateway);
        println!(
            "  curl -s {}/wait -H 'content-type: application/json' -d '{body}'",
            stack.gateway
        );
        println!(
            "  curl -s {}/wait -H 'content-type: application/json' -H 'baggage: tenant={}' -d '{body}'",
            stack.gateway, args.tenant
        );
        println!(
            "ledger (D): curl -s '{}/records?tenant={}'",
            stack.ledger, args.tenant
        );
        println!("registry:   curl -s {}/tenants", stack.registry);
        println!("Ctrl-C stops");
        service_kit::shutdown_on_signal().cancelled().await;
        println!("stopping…");
    }
    stack.stop().await?;
    telemetry.shutdown(Duration::from_secs(5));
    drop(broker);
    Ok(())
}
