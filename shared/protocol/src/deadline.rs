//! When a caller stops waiting: the `waiter-bus-deadline` header.
//!
//! A caller states its deadline as an absolute wall-clock time, Unix epoch
//! milliseconds in decimal (`1795472295789`), on the HTTP request to the
//! gateway or dispatch and on the Kafka record to the waiter. Each hop
//! passes on the earlier of what it was given and its own timeout, so the
//! waiter sees the tightest one. An absolute time needs no send timestamp
//! and survives any number of hops and queues; its cost is that hosts'
//! clocks must roughly agree. The waiter keeps a margin
//! (`waiter.deadline_margin`) before a deadline when deciding whether work
//! can still finish, which also absorbs skew of that order; a clock far
//! ahead of the caller's would drop work its caller still waits for, one
//! far behind would serve work nobody waits for, no worse than without a
//! deadline. Requests without the header have no deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in wall-clock time after which nobody waits for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    unix_ms: u64,
}

impl Deadline {
    /// The deadline at `unix_ms` milliseconds since the Unix epoch.
    pub fn at_unix_ms(unix_ms: u64) -> Self {
        Self { unix_ms }
    }

    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self::at_unix_ms(now_unix_ms().saturating_add(timeout.as_millis() as u64))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> u64 {
        self.unix_ms
    }

    /// The header value.
    pub fn to_header(self) -> String {
        self.unix_ms.to_string()
    }

    /// Parses a header value: decimal Unix milliseconds.
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Self::at_unix_ms)
            .ok_or_else(|| {
                format!(
                    "{} must be Unix epoch milliseconds in decimal, got {:?}",
                    crate::headers::DEADLINE,
                    String::from_utf8_lossy(value)
                )
            })
    }

    /// Time left before it, at wall-clock time `now_unix_ms`; zero once passed.
    pub fn remaining_at(self, now_unix_ms: u64) -> Duration {
        Duration::from_millis(self.unix_ms.saturating_sub(now_unix_ms))
    }

    /// Time left before it now.
    pub fn remaining(self) -> Duration {
        self.remaining_at(now_unix_ms())
    }

    /// The earlier of `self` and `other`, when there is one.
    pub fn earliest(self, other: Option<Self>) -> Self {
        other.map_or(self, |other| self.min(other))
    }
}

/// The wall clock in Unix milliseconds.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_reads_back_what_it_writes_and_refuses_anything_else() {
        let deadline = Deadline::at_unix_ms(1_795_472_295_789);
        assert_eq!(
            Deadline::parse(deadline.to_header().as_bytes()),
            Ok(deadline)
        );
        for bad in [&b""[..], b"soon", b"-5", b"1.5", b"\xff"] {
            let refused = Deadline::parse(bad).unwrap_err();
            assert!(refused.contains("waiter-bus-deadline"), "{refused}");
        }
    }

    #[test]
    fn remaining_time_never_goes_below_zero_and_the_earliest_wins() {
        let deadline = Deadline::at_unix_ms(10_000);
        assert_eq!(deadline.remaining_at(9_000), Duration::from_secs(1));
        assert_eq!(deadline.remaining_at(11_000), Duration::ZERO);
        let earlier = Deadline::at_unix_ms(5_000);
        assert_eq!(deadline.earliest(Some(earlier)), earlier);
        assert_eq!(deadline.earliest(None), deadline);
        assert_eq!(earlier.earliest(Some(deadline)), earlier);
    }
}
