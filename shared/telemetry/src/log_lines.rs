//! Plain log lines that lead to their trace: each line logged inside a
//! span starts with that span's `trace_id=… span_id=…`.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps an event format, writing the ids of the OpenTelemetry span the
/// event belongs to (its explicit parent, or the span it happens in)
/// before the line. Lines outside any span, or in an unsampled record's
/// (spanless) handling, are written as they were.
pub(crate) struct WithTraceIds<F>(pub(crate) F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let span = match event.is_contextual() {
            true => ctx.lookup_current().map(|span| span.id()),
            false => event.parent().cloned(),
        };
        let context = span.and_then(|id| {
            tracing::dispatcher::get_default(|dispatch| {
                tracing_opentelemetry::get_otel_context(&id, dispatch)
            })
        });
        if let Some(context) = context {
            let span = context.span();
            let ids = span.span_context();
            if ids.is_valid() {
                write!(
                    writer,
                    "trace_id={} span_id={} ",
                    ids.trace_id(),
                    ids.span_id()
                )?;
            }
        }
        self.0.format_event(ctx, writer, event)
    }
}
