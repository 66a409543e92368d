//! The waiter against the embedded broker: real Kafka protocol, real HTTP,
//! real spans. Each test has its own broker, topics, group and variant label.

mod backpressure;
mod cluster;
mod dead_letters;
mod helpers;
mod interop;
mod ledger;
mod lifecycle;
mod observability;
mod replies;

use std::time::Duration;

use std::collections::HashSet;
use std::process::{Command, Stdio};

use helpers::{
    Client, DEADLINE, Request, Topics, WaiterProcess, count, count_by_correlation, header,
    records_in, reply_body, send_to_partition, settings, spawn_waiter, started, started_with,
};
use opentelemetry::trace::{SpanKind, TraceId};
use protocol::wire::ReplyStatus;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use testkit::TestKafka;
