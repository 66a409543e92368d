//! Checks on incoming `traceparent` and `baggage` values, per the W3C specs.
//!
//! The OpenTelemetry propagators already ignore what they cannot parse; this
//! module makes that visible (a warning and a counter) and enforces the
//! baggage size limits before anything is parsed.

/// Most members a `baggage` header may carry (W3C Baggage, "Limits").
pub const MAX_BAGGAGE_MEMBERS: usize = 64;
/// Most bytes a `baggage` header may carry (W3C Baggage, "Limits").
pub const MAX_BAGGAGE_BYTES: usize = 8192;
/// A `tracestate` longer than this is not worth carrying (W3C: 32 members of
/// at most 256 bytes each, 512 recommended in practice).
pub const MAX_TRACESTATE_BYTES: usize = 8192;

/// Where a header came from, for the counter's `carrier` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// An HTTP request.
    Http,
    /// A Kafka record.
    Kafka,
}

impl Carrier {
    fn label(self) -> &'static str {
        match self {
            Carrier::Http => "http",
            Carrier::Kafka => "kafka",
        }
    }
}

/// Why a header value was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not valid UTF-8 (only possible on Kafka, whose headers are bytes).
    NotUtf8,
    /// Over [`MAX_BAGGAGE_BYTES`] (or [`MAX_TRACESTATE_BYTES`]).
    TooLarge,
    /// Over [`MAX_BAGGAGE_MEMBERS`].
    TooManyMembers,
    /// Not of the header's grammar.
    Malformed,
}

impl Rejection {
    /// The counter's `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::NotUtf8 => "not_utf8",
            Rejection::TooLarge => "too_large",
            Rejection::TooManyMembers => "too_many_members",
            Rejection::Malformed => "malformed",
        }
    }

    /// Logs and counts the rejection.
    pub fn record(self, carrier: Carrier, header: &'static str) {
        tracing::warn!(
            carrier = carrier.label(),
            header,
            reason = self.label(),
            "dropping an unusable propagation header; the message is processed without it"
        );
        metrics::counter!(
            "propagation_headers_rejected_total",
            "carrier" => carrier.label(),
            "header" => header,
            "reason" => self.label(),
        )
        .increment(1);
    }
}

/// Checks one propagation header, returning the value to hand the propagator.
pub fn check_header(name: &str, bytes: &[u8]) -> Result<String, Rejection> {
    let limit = match name {
        "baggage" => MAX_BAGGAGE_BYTES,
        _ => MAX_TRACESTATE_BYTES,
    };
    if bytes.len() > limit {
        return Err(Rejection::TooLarge);
    }
    let value = std::str::from_utf8(bytes).map_err(|_| Rejection::NotUtf8)?;
    match name {
        "traceparent" => check_traceparent(value)?,
        "baggage" => check_baggage(value)?,
        _ => {}
    }
    Ok(value.to_string())
}

/// `version-traceid-parentid-flags`, lower-case hex, ids not all zero.
/// Versions above 00 may append fields, which is allowed (W3C Trace Context §3.2.4).
pub fn check_traceparent(value: &str) -> Result<(), Rejection> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let well_formed = parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && (parts[0] != "00" || parts.len() == 4)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    if well_formed {
        Ok(())
    } else {
        Err(Rejection::Malformed)
    }
}

/// A comma-separated list of `key=value[;property]` members within the limits.
pub fn check_baggage(value: &str) -> Result<(), Rejection> {
    let members: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if members.len() > MAX_BAGGAGE_MEMBERS {
        return Err(Rejection::TooManyMembers);
    }
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    for member in members {
        let pair = member.split(';').next().unwrap_or_default();
        let Some((key, _value)) = pair.split_once('=') else {
            return Err(Rejection::Malformed);
        };
        if !is_token(key.trim()) {
            return Err(Rejection::Malformed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod fuzz {
    //! Any bytes in a propagation header: never a panic, and whatever is
    //! accepted is within the limits and well formed.
    use proptest::prelude::*;

    use super::*;

    fn header_name() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("traceparent"), Just("tracestate"), Just("baggage")]
    }

    fn near_valid() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            "[0-9a-f-]{0,70}".prop_map(String::into_bytes),
            "([a-z=;, ]{0,12}){0,80}".prop_map(String::into_bytes),
            Just(vec![b'a'; MAX_BAGGAGE_BYTES + 1]),
        ]
    }

    proptest! {
        #[test]
        fn any_header_value_is_accepted_within_limits_or_refused(
            name in header_name(),
            bytes in near_valid(),
        ) {
            if let Ok(value) = check_header(name, &bytes) {
                prop_assert!(value.len() <= MAX_BAGGAGE_BYTES.max(MAX_TRACESTATE_BYTES));
                if name == "baggage" {
                    let members = value.split(',').filter(|m| !m.trim().is_empty()).count();
                    prop_assert!(members <= MAX_BAGGAGE_MEMBERS);
                }
                if name == "traceparent" {
                    prop_assert!(value.trim().len() >= 55);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparent_passes() {
        assert_eq!(check_traceparent(VALID), Ok(()));
        // A future version may carry more fields.
        assert_eq!(
            check_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
            Ok(())
        );
    }

    #[test]
    fn malformed_traceparents_are_rejected() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(check_traceparent(bad), Err(Rejection::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn baggage_within_limits_passes() {
        assert_eq!(check_baggage("tenant=123"), Ok(()));
        assert_eq!(check_baggage("tenant=123;prop=1, user=%20x"), Ok(()));
        let members: Vec<String> = (0..64).map(|i| format!("k{i}=v")).collect();
        assert_eq!(check_baggage(&members.join(",")), Ok(()));
    }

    #[test]
    fn baggage_over_the_member_limit_is_rejected() {
        let members: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            check_baggage(&members.join(",")),
            Err(Rejection::TooManyMembers)
        );
    }

    #[test]
    fn baggage_over_the_byte_limit_is_rejected() {
        let big = format!("tenant={}", "x".repeat(MAX_BAGGAGE_BYTES));
        assert_eq!(
            check_header("baggage", big.as_bytes()),
            Err(Rejection::TooLarge)
        );
    }

    #[test]
    fn malformed_baggage_is_rejected() {
        assert_eq!(check_baggage("tenant"), Err(Rejection::Malformed));
        assert_eq!(check_baggage("ten ant=1"), Err(Rejection::Malformed));
        assert_eq!(check_baggage("=1"), Err(Rejection::Malformed));
    }

    #[test]
    fn non_utf8_is_rejected() {
        assert_eq!(
            check_header("baggage", &[0x74, 0xff, 0x3d, 0x31]),
            Err(Rejection::NotUtf8)
        );
    }
}
