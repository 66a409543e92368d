//! Traces and hops drawn as text: a span tree with bars on a shared time
//! axis, the way a trace viewer shows it, for a terminal.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::SpanData;

/// Columns of the bar part of each line.
const BAR_WIDTH: usize = 36;
/// Columns for the indented span name.
const NAME_WIDTH: usize = 44;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Why a consumer skipped this record (the tenancy rule's reason), when it did.
fn skip_reason(span: &SpanData) -> Option<String> {
    span.events.iter().find(|e| e.name == "skipped").map(|e| {
        e.attributes
            .iter()
            .find(|kv| kv.key.as_str() == "tenancy.skip_reason")
            .map_or_else(|| "no reason given".into(), |kv| kv.value.to_string())
    })
}

fn since(t: SystemTime, origin: SystemTime) -> Duration {
    t.duration_since(origin).unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Draws one trace: every span under its parent, ordered by start, with the
/// service and variant that recorded it, a bar placing it on the trace's
/// time axis, and its duration. Spans whose parent is not among `spans`
/// (the caller's own, or one still open) are drawn as roots.
pub fn render_trace(spans: &[SpanData]) -> String {
    let mut out = String::new();
    let Some(first) = spans.first() else {
        return "(no spans)\n".into();
    };
    let origin = spans
        .iter()
        .map(|s| s.start_time)
        .min()
        .unwrap_or(first.start_time);
    let end = spans
        .iter()
        .map(|s| s.end_time)
        .max()
        .unwrap_or(first.end_time);
    let total = since(end, origin).max(Duration::from_micros(1));

    let ids: std::collections::HashSet<SpanId> =
        spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut children: HashMap<Option<SpanId>, Vec<&SpanData>> = HashMap::new();
    for span in spans {
        let parent = (span.parent_span_id != SpanId::INVALID && ids.contains(&span.parent_span_id))
            .then_some(span.parent_span_id);
        children.entry(parent).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_time);
    }

    let _ = writeln!(
        out,
        "trace {}  ({:.1} ms, {} spans)",
        first.span_context.trace_id(),
        ms(total),
        spans.len()
    );
    let _ = writeln!(
        out,
        "{:<10}{:<10}{:<NAME_WIDTH$} {:<BAR_WIDTH$} {:>9}",
        "service", "variant", "span", "0 ms", "duration"
    );
    let mut stack: Vec<(&SpanData, usize)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|s| (*s, 0)).collect())
        .unwrap_or_default();
    while let Some((span, depth)) = stack.pop() {
        let start = since(span.start_time, origin);
        let duration = span
            .end_time
            .duration_since(span.start_time)
            .unwrap_or_default();
        let from = (start.as_secs_f64() / total.as_secs_f64() * BAR_WIDTH as f64) as usize;
        let to = ((start + duration).as_secs_f64() / total.as_secs_f64() * BAR_WIDTH as f64).ceil()
            as usize;
        let from = from.min(BAR_WIDTH - 1);
        let to = to.clamp(from + 1, BAR_WIDTH);
        let bar = format!("{}{}", " ".repeat(from), "█".repeat(to - from));
        // A skip span says so in its name (`skip {topic}`); its reason
        // is the last column.
        let mut name = format!("{}{}", "  ".repeat(depth), span.name);
        let skipped = skip_reason(span);
        if name.chars().count() > NAME_WIDTH {
            name = name.chars().take(NAME_WIDTH - 1).collect::<String>() + "…";
        }
        let _ = writeln!(
            out,
            "{:<10}{:<10}{:<NAME_WIDTH$} {:<BAR_WIDTH$} {:>6.1} ms{}",
            attribute(span, "service").unwrap_or_else(|| "-".into()),
            attribute(span, "variant").unwrap_or_else(|| "-".into()),
            name,
            bar,
            ms(duration),
            skipped
                .map(|reason| format!("  {reason}"))
                .unwrap_or_default()
        );
        if let Some(kids) = children.get(&Some(span.span_context.span_id())) {
            stack.extend(kids.iter().rev().map(|s| (*s, depth + 1)));
        }
    }
    out
}

/// Which variant of each service did the work in a trace: every service
/// in [`crate::SERVICES`] order with the variants of its spans, leaving out
/// consumers that only looked at the record and skipped it.
pub fn hops(spans: &[SpanData]) -> Vec<(String, String)> {
    let mut hops: Vec<(String, String)> = Vec::new();
    for service in crate::SERVICES {
        for span in spans {
            if attribute(span, "service").as_deref() != Some(service) || skip_reason(span).is_some()
            {
                continue;
            }
            let variant = attribute(span, "variant").unwrap_or_else(|| "-".into());
            if !hops.iter().any(|(s, v)| s == service && *v == variant) {
                hops.push((service.to_string(), variant));
            }
        }
    }
    hops
}

/// A table of which variant handled each hop, one column per request.
pub fn render_hops(columns: &[(&str, &[(String, String)])]) -> String {
    let mut services: Vec<&str> = Vec::new();
    for (_, hops) in columns {
        for (service, _) in hops.iter() {
            if !services.contains(&service.as_str()) {
                services.push(service);
            }
        }
    }
    let mut out = String::new();
    let _ = write!(out, "{:<10}", "hop");
    for (title, _) in columns {
        let _ = write!(out, "{title:<24}");
    }
    out.push('\n');
    for service in services {
        let _ = write!(out, "{service:<10}");
        for (_, hops) in columns {
            let variants: Vec<&str> = hops
                .iter()
                .filter(|(s, _)| s == service)
                .map(|(_, v)| v.as_str())
                .collect();
            let cell = if variants.is_empty() {
                "-".to_string()
            } else {
                variants.join(", ")
            };
            let _ = write!(out, "{cell:<24}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    fn span(id: u64, parent: u64, name: &'static str, start_ms: u64, end_ms: u64) -> SpanData {
        let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: origin + Duration::from_millis(start_ms),
            end_time: origin + Duration::from_millis(end_ms),
            attributes: vec![
                KeyValue::new("service", name.split(' ').next().unwrap_or("x").to_string()),
                KeyValue::new("variant", "baseline"),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn children_are_indented_under_their_parent_in_start_order_with_bars_on_one_axis() {
        // Given out of order, with one span whose parent is elsewhere.
        let spans = vec![
            span(3, 1, "waiter process", 50, 100),
            span(1, 0, "gateway POST", 0, 100),
            span(2, 1, "dispatch publish", 10, 20),
            span(9, 42, "orphan", 0, 10),
        ];
        let text = render_trace(&spans);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("trace 00000000000000000000000000000007  (100.0 ms, 4 spans)")
        );
        let names: Vec<&str> = lines[2..]
            .iter()
            .map(|l| l[20..20 + NAME_WIDTH].trim_end())
            .collect();
        assert_eq!(
            names,
            [
                "gateway POST",
                "  dispatch publish",
                "  waiter process",
                "orphan"
            ]
        );
        // The root spans the whole axis; the last child fills its second half.
        let bar = |line: &str| {
            line.chars()
                .skip(20 + NAME_WIDTH + 1)
                .take(BAR_WIDTH)
                .collect::<String>()
        };
        assert_eq!(bar(lines[2]), "█".repeat(BAR_WIDTH));
        assert_eq!(
            bar(lines[4]),
            format!("{}{}", " ".repeat(BAR_WIDTH / 2), "█".repeat(BAR_WIDTH / 2))
        );
        assert!(lines[3].ends_with("10.0 ms"), "{}", lines[3]);
    }

    #[test]
    fn hops_name_the_variant_that_did_the_work_not_the_one_that_skipped() {
        let mut skipped = span(4, 1, "skip Waiter-Requests", 1, 2);
        skipped.attributes[1] = KeyValue::new("variant", "sbx-123");
        skipped.events.events.push(opentelemetry::trace::Event::new(
            "skipped",
            SystemTime::now(),
            vec![KeyValue::new("tenancy.skip_reason", "routed_elsewhere")],
            0,
        ));
        let spans = vec![
            span(1, 0, "gateway POST", 0, 100),
            span(2, 1, "dispatch publish", 10, 20),
            span(3, 1, "waiter process", 50, 100),
            skipped,
            span(5, 3, "ledger POST", 60, 70),
        ];
        let hops = hops(&spans);
        let pairs: Vec<String> = hops.iter().map(|(s, v)| format!("{s}={v}")).collect();
        assert_eq!(
            pairs,
            [
                "gateway=baseline",
                "dispatch=baseline",
                "waiter=baseline",
                "ledger=baseline"
            ]
        );
        let text = render_trace(&spans);
        let skipped_line = text.lines().find(|l| l.contains("skip ")).unwrap();
        assert!(skipped_line.contains("  skip Waiter-Requests"), "{text}");
        assert!(skipped_line.ends_with("ms  routed_elsewhere"), "{text}");

        let tenant = vec![
            ("gateway".to_string(), "baseline".to_string()),
            ("waiter".to_string(), "sbx-123".to_string()),
        ];
        let table = render_hops(&[("baseline", &hops), ("tenant 123", &tenant)]);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[1], ["gateway", "baseline", "baseline"]);
        assert_eq!(rows[2], ["dispatch", "baseline", "-"]);
        assert_eq!(rows[3], ["waiter", "baseline", "sbx-123"]);
    }
}
