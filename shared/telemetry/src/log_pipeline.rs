//! Log records exported under the `service.name` of the service that
//! logged them, as spans are (see `SpanPipeline`): a record's target is the
//! module path it was logged from, whose first segment is the crate, and
//! each service is a crate of its own (`waiter::consumer` is the waiter's).
//! Records of shared crates (tenancy, kafka-kit) go out under the
//! process's own name.

use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{BatchLogProcessor, LogProcessor, SdkLogRecord};

/// One batch processor per exported `service.name`, the process's own first.
#[derive(Debug)]
pub(crate) struct LogPipeline {
    pub(crate) exporters: Vec<(String, BatchLogProcessor)>,
}

impl LogPipeline {
    fn exporter_for(&self, record: &SdkLogRecord) -> Option<&BatchLogProcessor> {
        let (_, own) = self.exporters.first()?;
        let service = record
            .target()
            .and_then(|target| target.split("::").next().map(str::to_string));
        let routed = service.and_then(|service| {
            self.exporters[1..]
                .iter()
                .find(|(name, _)| *name == service)
                .map(|(_, exporter)| exporter)
        });
        Some(routed.unwrap_or(own))
    }
}

impl LogProcessor for LogPipeline {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if let Some(exporter) = self.exporter_for(record) {
            exporter.emit(record, scope);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporters
            .iter()
            .map(|(_, e)| e.force_flush())
            .find(Result::is_err)
            .unwrap_or(Ok(()))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // Every one is shut down, even after one fails.
        let results: Vec<_> = self
            .exporters
            .iter()
            .map(|(_, e)| e.shutdown_with_timeout(timeout))
            .collect();
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }

    fn set_resource(&mut self, resource: &Resource) {
        for (service, exporter) in &mut self.exporters {
            exporter.set_resource(&crate::named(resource, service));
        }
    }
}

/// `resource` with `service.name` = `service`.
pub(crate) fn named(resource: &Resource, service: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            resource
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .with_service_name(service.to_string())
        .build()
}
