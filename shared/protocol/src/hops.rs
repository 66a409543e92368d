//! Which variant handled each hop so far: the `waiter-bus-hops` header
//! (`gateway=baseline,dispatch=sbx-123`), written by each hop for the next.

use serde::{Deserialize, Serialize};

use crate::service::Service;

/// One hop and the variant that handled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// The service.
    pub service: Service,
    /// `baseline` or a variant label.
    pub variant: String,
}

/// The hops of one request, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hops(Vec<Hop>);

impl Hops {
    /// No hops yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a header value. Entries that are not `service=variant` with a
    /// known service, or whose variant is empty or not a plain label, are
    /// dropped: the header comes from the outside world.
    pub fn parse(header: &str) -> Self {
        Self(
            header
                .split(',')
                .filter_map(|entry| {
                    let (service, variant) = entry.split_once('=')?;
                    let variant = variant.trim();
                    let plain = !variant.is_empty()
                        && variant.len() <= 64
                        && variant
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    let service = service.trim().parse().ok()?;
                    plain.then(|| Hop {
                        service,
                        variant: variant.to_string(),
                    })
                })
                .collect(),
        )
    }

    /// These hops and then `service` handled by `variant`.
    pub fn then(mut self, service: Service, variant: &str) -> Self {
        self.0.push(Hop {
            service,
            variant: variant.to_string(),
        });
        self
    }

    /// The hops, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Hop> {
        self.0.iter()
    }

    /// The variant that handled `service`, the last one if it appears twice.
    pub fn variant_of(&self, service: Service) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|hop| hop.service == service)
            .map(|hop| hop.variant.as_str())
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        self.0
            .iter()
            .map(|hop| format!("{}={}", hop.service, hop.variant))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromIterator<Hop> for Hops {
    fn from_iter<I: IntoIterator<Item = Hop>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_what_it_writes() {
        let hops = Hops::new()
            .then(Service::Gateway, "baseline")
            .then(Service::Dispatch, "sbx-123");
        assert_eq!(hops.to_header(), "gateway=baseline,dispatch=sbx-123");
        assert_eq!(Hops::parse(&hops.to_header()), hops);
        assert_eq!(hops.variant_of(Service::Dispatch), Some("sbx-123"));
        assert_eq!(hops.variant_of(Service::Waiter), None);
    }

    #[test]
    fn entries_that_are_not_service_equals_label_are_dropped() {
        let hops = Hops::parse(
            "gateway=baseline, nonsense ,mallory=x,waiter=,dispatch=a b,dispatch= v-1 ",
        );
        assert_eq!(hops.to_header(), "gateway=baseline,dispatch=v-1");
        assert_eq!(Hops::parse(""), Hops::new());
    }
}
