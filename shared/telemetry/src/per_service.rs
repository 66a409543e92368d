//! One exporter per `service.name`, so a process running several services
//! (the demo, `load --embedded`) exports each under its own name. The span
//! and log pipelines both route through it; only how they find a record's
//! service differs.

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;

/// Processors by `service.name`: the process's own first, then each
/// service it hosts.
#[derive(Debug)]
pub(crate) struct PerService<P> {
    entries: Vec<(String, P)>,
}

impl<P> PerService<P> {
    /// One processor from `make` per name in `names` (the process's own first).
    pub(crate) fn build<E>(
        names: &[&str],
        mut make: impl FnMut() -> Result<P, E>,
    ) -> Result<Self, E> {
        let entries = names
            .iter()
            .map(|name| Ok((name.to_string(), make()?)))
            .collect::<Result<_, E>>()?;
        Ok(Self { entries })
    }

    /// None at all: nothing is exported.
    pub(crate) fn none() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// The processor of `service` when this process hosts it, else the
    /// process's own; `None` when nothing is exported.
    pub(crate) fn for_service(&self, service: Option<&str>) -> Option<&P> {
        let (_, own) = self.entries.first()?;
        let hosted = service.and_then(|service| {
            self.entries[1..]
                .iter()
                .find(|(name, _)| name == service)
                .map(|(_, processor)| processor)
        });
        Some(hosted.unwrap_or(own))
    }

    /// `each` on every processor, even after one fails; the first failure.
    pub(crate) fn on_all(&self, each: impl Fn(&P) -> OTelSdkResult) -> OTelSdkResult {
        let results: Vec<_> = self.entries.iter().map(|(_, p)| each(p)).collect();
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }

    /// Gives each processor `resource` with its own `service.name`.
    pub(crate) fn set_resource(&mut self, resource: &Resource, set: impl Fn(&mut P, &Resource)) {
        for (service, processor) in &mut self.entries {
            let named = Resource::builder_empty()
                .with_attributes(
                    resource
                        .iter()
                        .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
                )
                .with_service_name(service.clone())
                .build();
            set(processor, &named);
        }
    }
}
