//! Log records exported under the `service.name` of the service that
//! logged them, as spans are (see `SpanPipeline`): a record's target is the
//! module path it was logged from, whose first segment is the crate, and
//! each service is a crate of its own (`waiter::consumer` is the waiter's).
//! Records of shared crates (tenancy, kafka-kit) go out under the
//! process's own name.

use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{BatchLogProcessor, LogProcessor, SdkLogRecord};

use crate::per_service::PerService;

/// The batch processors exporting log records, by the logging crate.
#[derive(Debug)]
pub(crate) struct LogPipeline {
    pub(crate) exporters: PerService<BatchLogProcessor>,
}

impl LogProcessor for LogPipeline {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        let service = record.target().and_then(|target| target.split("::").next());
        if let Some(exporter) = self.exporters.for_service(service) {
            exporter.emit(record, scope);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporters.on_all(BatchLogProcessor::force_flush)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporters
            .on_all(|exporter| exporter.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporters
            .set_resource(resource, BatchLogProcessor::set_resource);
    }
}
