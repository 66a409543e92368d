//! What a run measured: counts that add up, latency percentiles, the hop
//! breakdown, and SLO checks.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency histograms record microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Percentiles {
    /// Summarises a microsecond histogram.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

/// Request accounting. `sent = received + timed_out + in_flight`, and
/// `attempted = sent + send_failed`, always.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Requests the generator tried to send.
    pub attempted: u64,
    /// Requests the broker acknowledged.
    pub sent: u64,
    /// Requests the broker refused or that could not be produced in time.
    pub send_failed: u64,
    /// Requests answered before their deadline (first reply only).
    pub received: u64,
    /// Requests with no reply by their deadline.
    pub timed_out: u64,
    /// Requests still awaiting a reply when the report was made.
    pub in_flight: u64,
    /// Extra replies for a request already answered.
    pub duplicates: u64,
    /// Replies for a request that had already timed out.
    pub late: u64,
    /// Replies whose correlation this run never sent.
    pub unexpected: u64,
    /// Replies saying the request was refused (`"status": "error"`).
    pub error_replies: u64,
}

impl Counts {
    /// Whether the invariants hold.
    pub fn add_up(&self) -> bool {
        self.attempted == self.sent + self.send_failed
            && self.sent == self.received + self.timed_out + self.in_flight
    }

    /// Everything that went wrong, for `--slo errors=N`.
    pub fn errors(&self) -> u64 {
        self.send_failed
            + self.timed_out
            + self.duplicates
            + self.late
            + self.unexpected
            + self.error_replies
    }
}

/// Where the time went, hop by hop, as far as headers and timestamps tell.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Hops {
    /// Send until the broker acknowledged the request.
    pub producer_ack: Percentiles,
    /// Request timestamp until the waiter consumed it (`waiter.consumed.us`).
    pub broker_to_consumer: Percentiles,
    /// Waiting for a free waiter (`waiter.queue.us`).
    pub queue: Percentiles,
    /// The wait itself, plus the ledger when configured (`waiter.service.us`).
    pub service: Percentiles,
    /// Hand-off to the waiter's producer (`waiter.handoff.us`).
    pub reply_handoff: Percentiles,
    /// Reply timestamp until this generator consumed it.
    pub reply_consume: Percentiles,
    /// The timestamp type the broker gave on requests, and on replies.
    pub timestamp_types: Vec<String>,
    /// What could not be split, and why.
    pub unsplit: Vec<String>,
}

/// The whole result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The target: `kafka`.
    pub target: String,
    /// `open` (rate) or `closed` (users).
    pub model: String,
    /// The configured rate, for open loop.
    pub rate: Option<f64>,
    /// The configured users, for closed loop.
    pub users: Option<usize>,
    /// Wall time of the run including the final wait for replies.
    pub elapsed_s: f64,
    /// Replies received per second over the sending period.
    pub throughput_per_s: f64,
    /// Accounting.
    pub counts: Counts,
    /// End-to-end latency, from each request's intended send time.
    pub latency: Percentiles,
    /// Actual minus intended send time (open loop: the generator's own lag).
    pub send_delay: Percentiles,
    /// The hop breakdown.
    pub hops: Hops,
    /// The longest time between two answers: how long replies stopped.
    pub longest_reply_gap: ReplyGap,
    /// Latency p99 per second of the run, for plotting.
    pub timeline: Vec<Second>,
}

/// The longest pause between two consecutive answers of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ReplyGap {
    /// Its length, in ms.
    pub ms: f64,
    /// When it began, in seconds since the start of the run.
    pub from_s: f64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    /// Seconds since the start.
    pub second: u64,
    /// Replies received in that second.
    pub received: u64,
    /// Their p99 latency in ms.
    pub p99_ms: f64,
}

/// A service-level objective: `p99=200ms`, `max=1s`, `errors=0`, `timeouts=0`.
#[derive(Debug, Clone, PartialEq)]
pub enum Slo {
    /// A latency percentile must not exceed the limit.
    Latency {
        /// `p50`, `p90`, `p99`, `p999` or `max`.
        name: String,
        /// The limit.
        limit: Duration,
    },
    /// A count must not exceed the limit.
    Count {
        /// `errors`, `timeouts`, `duplicates`.
        name: String,
        /// The limit.
        limit: u64,
    },
}

impl std::str::FromStr for Slo {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, limit) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected NAME=LIMIT, e.g. p99=200ms or errors=0"))?;
        match name {
            "p50" | "p90" | "p99" | "p999" | "max" => Ok(Slo::Latency {
                name: name.into(),
                limit: humantime::parse_duration(limit)
                    .map_err(|e| format!("{text:?}: {limit:?} is not a duration ({e})"))?,
            }),
            "errors" | "timeouts" | "duplicates" => Ok(Slo::Count {
                name: name.into(),
                limit: limit
                    .parse()
                    .map_err(|_| format!("{text:?}: {limit:?} is not a whole number"))?,
            }),
            other => Err(format!(
                "{text:?}: unknown objective {other:?}; use p50, p90, p99, p999, max, errors, timeouts or duplicates"
            )),
        }
    }
}

impl Report {
    /// The objectives this run missed, each as a sentence.
    pub fn violations(&self, slos: &[Slo]) -> Vec<String> {
        let mut missed = Vec::new();
        for slo in slos {
            match slo {
                Slo::Latency { name, limit } => {
                    let actual = match name.as_str() {
                        "p50" => self.latency.p50_ms,
                        "p90" => self.latency.p90_ms,
                        "p99" => self.latency.p99_ms,
                        "p999" => self.latency.p999_ms,
                        _ => self.latency.max_ms,
                    };
                    let limit_ms = limit.as_secs_f64() * 1000.0;
                    if actual > limit_ms || self.latency.count == 0 {
                        missed.push(format!(
                            "{name} latency {actual:.2} ms exceeds {limit_ms:.2} ms{}",
                            if self.latency.count == 0 {
                                " (no replies at all)"
                            } else {
                                ""
                            }
                        ));
                    }
                }
                Slo::Count { name, limit } => {
                    let actual = match name.as_str() {
                        "errors" => self.counts.errors(),
                        "timeouts" => self.counts.timed_out,
                        _ => self.counts.duplicates,
                    };
                    if actual > *limit {
                        missed.push(format!("{name} {actual} exceeds {limit}"));
                    }
                }
            }
        }
        missed
    }

    /// The final table, for a terminal.
    pub fn table(&self) -> String {
        let c = &self.counts;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "target {} · {} loop{} · {:.1} s · {:.1} replies/s",
            self.target,
            self.model,
            match (self.rate, self.users) {
                (Some(rate), _) => format!(" at {rate} req/s"),
                (_, Some(users)) => format!(" with {users} users"),
                _ => String::new(),
            },
            self.elapsed_s,
            self.throughput_per_s
        ));
        line(format!(
            "requests  attempted {}  sent {}  send-failed {}  received {}  timed-out {}  in-flight {}",
            c.attempted, c.sent, c.send_failed, c.received, c.timed_out, c.in_flight
        ));
        line(format!(
            "replies   duplicates {}  late {}  unexpected {}  error-replies {}   (counts add up: {})",
            c.duplicates,
            c.late,
            c.unexpected,
            c.error_replies,
            if c.add_up() { "yes" } else { "NO" }
        ));
        line(format!(
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        ));
        let mut row = |name: &str, p: &Percentiles| {
            line(format!(
                "{:<22} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                name, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            ))
        };
        row("end to end", &self.latency);
        row("send delay", &self.send_delay);
        row("  producer ack", &self.hops.producer_ack);
        row("  broker → consumer", &self.hops.broker_to_consumer);
        row("  queue (waiter)", &self.hops.queue);
        row("  service (waiter)", &self.hops.service);
        row("  reply hand-off", &self.hops.reply_handoff);
        row("  reply consume", &self.hops.reply_consume);
        line(format!(
            "timestamps: {}",
            self.hops.timestamp_types.join(", ")
        ));
        for note in &self.hops.unsplit {
            line(format!("not split: {note}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_parse_and_refuse_nonsense() {
        assert_eq!(
            "p99=200ms".parse::<Slo>().unwrap(),
            Slo::Latency {
                name: "p99".into(),
                limit: Duration::from_millis(200)
            }
        );
        assert_eq!(
            "errors=0".parse::<Slo>().unwrap(),
            Slo::Count {
                name: "errors".into(),
                limit: 0
            }
        );
        assert!(
            "p98=1ms"
                .parse::<Slo>()
                .unwrap_err()
                .contains("unknown objective")
        );
        assert!(
            "p99=fast"
                .parse::<Slo>()
                .unwrap_err()
                .contains("not a duration")
        );
        assert!("errors".parse::<Slo>().unwrap_err().contains("NAME=LIMIT"));
    }

    #[test]
    fn counts_add_up_only_when_every_request_is_accounted_for() {
        let mut counts = Counts {
            attempted: 10,
            sent: 9,
            send_failed: 1,
            received: 7,
            timed_out: 2,
            ..Counts::default()
        };
        assert!(counts.add_up());
        counts.received = 6;
        assert!(!counts.add_up());
    }
}
