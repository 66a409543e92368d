//! Dispatch's metrics: names, help texts, and registration at zero, so a
//! dashboard's query finds every series from the first scrape.

/// Calls answered 504 because no reply came in time.
pub(crate) const REPLIES_TIMED_OUT: &str = "dispatch_replies_timed_out_total";
/// Replies for another instance's calls.
pub(crate) const REPLIES_IGNORED: &str = "dispatch_replies_ignored_total";
/// Replies the reader read, whoever's they were.
pub(crate) const REPLIES_READ: &str = "dispatch_replies_read_total";
/// Reply partitions this instance's calls name now.
pub(crate) const REPLY_PARTITIONS_OWNED: &str = "dispatch_reply_partitions_owned";
/// Replies that arrived after their call here gave up.
pub(crate) const REPLIES_LATE: &str = "dispatch_replies_late_total";

/// Describes every dispatch metric and registers each counter at zero.
pub(crate) fn register() {
    telemetry::counter_at_zero(
        REPLIES_TIMED_OUT,
        "Calls answered 504 because no reply arrived within the deadline.",
        &[&[]],
    );
    telemetry::counter_at_zero(
        REPLIES_IGNORED,
        "Replies read for calls of another dispatch instance.",
        &[&[]],
    );
    telemetry::counter_at_zero(
        REPLIES_READ,
        "Replies read from the reply partitions this instance reads, whoever's they were.",
        &[&[]],
    );
    metrics::describe_gauge!(
        REPLY_PARTITIONS_OWNED,
        "Partitions of the response topic this instance's calls name as their reply partition."
    );
    metrics::gauge!(REPLY_PARTITIONS_OWNED).set(0.0);
    telemetry::counter_at_zero(
        REPLIES_LATE,
        "Replies that arrived after their call here had given up (504 or client gone).",
        &[&[]],
    );
}
