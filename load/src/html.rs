//! A self-contained HTML report: inline SVG plots, no scripts, no network.

use std::fmt::Write;

use crate::report::{Percentiles, Report};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const MARGIN: f64 = 48.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of `(x, y)` points.
fn line_chart(title: &str, y_unit: &str, points: &[(f64, f64)]) -> String {
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}">"#,
        escape(title),
        escape(title)
    );
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points
        .iter()
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let x = |v: f64| MARGIN + v / max_x * (WIDTH - 2.0 * MARGIN);
    let y = |v: f64| HEIGHT - MARGIN + -v / max_y * (HEIGHT - 2.0 * MARGIN);
    let _ = write!(
        svg,
        r##"<line x1="{MARGIN}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{b}" stroke="#888"/>"##,
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN
    );
    let _ = write!(
        svg,
        r#"<text x="4" y="{}" font-size="11">{max_y:.1} {}</text><text x="4" y="{}" font-size="11">0</text><text x="{}" y="{}" font-size="11">{max_x:.0} s</text>"#,
        MARGIN,
        escape(y_unit),
        HEIGHT - MARGIN,
        WIDTH - MARGIN - 20.0,
        HEIGHT - MARGIN + 16.0
    );
    if !points.is_empty() {
        let path: Vec<String> = points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#2a6fdb" stroke-width="2" points="{}"/>"##,
            path.join(" ")
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// A horizontal bar chart of labelled values.
fn bar_chart(title: &str, unit: &str, bars: &[(&str, f64)]) -> String {
    let row = 22.0;
    let height = MARGIN + row * bars.len() as f64;
    let max = bars
        .iter()
        .map(|b| b.1)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{}">"#,
        escape(title),
        escape(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let top = 10.0 + row * i as f64;
        let length = value / max * (WIDTH - 260.0);
        let _ = write!(
            svg,
            r##"<text x="4" y="{}" font-size="12">{}</text><rect x="170" y="{top}" width="{length:.1}" height="{}" fill="#2a6fdb"/><text x="{}" y="{}" font-size="12">{value:.2} {}</text>"##,
            top + 14.0,
            escape(label),
            row - 6.0,
            175.0 + length,
            top + 14.0,
            escape(unit)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn percentile_row(name: &str, p: &Percentiles) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
        escape(name),
        p.count,
        p.p50_ms,
        p.p90_ms,
        p.p99_ms,
        p.p999_ms,
        p.max_ms
    )
}

/// The report as one HTML document.
pub fn render(report: &Report) -> String {
    let c = &report.counts;
    let h = &report.hops;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>waiter-bus load report</title><style>body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}figcaption{font-weight:600}</style></head><body>",
    );
    let _ = write!(
        html,
        "<h1>Load report</h1><p>target {} · {} loop · {:.1} s · {:.1} replies/s</p>",
        escape(&report.target),
        escape(&report.model),
        report.elapsed_s,
        report.throughput_per_s
    );
    let _ = write!(
        html,
        "<h2>Requests</h2><table><tr><th>attempted</th><th>sent</th><th>send failed</th><th>received</th><th>timed out</th><th>in flight</th><th>duplicates</th><th>late</th><th>unexpected</th><th>refused</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table><p>Counts add up: {}</p>",
        c.attempted,
        c.sent,
        c.send_failed,
        c.received,
        c.timed_out,
        c.in_flight,
        c.duplicates,
        c.late,
        c.unexpected,
        c.error_replies,
        if c.add_up() { "yes" } else { "NO" }
    );
    let p99: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .map(|s| (s.second as f64, s.p99_ms))
        .collect();
    let throughput: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .map(|s| (s.second as f64, s.received as f64))
        .collect();
    html.push_str(&line_chart(
        "Latency over time (p99 per second)",
        "ms",
        &p99,
    ));
    html.push_str(&line_chart(
        "Throughput (replies per second)",
        "/s",
        &throughput,
    ));
    let l = &report.latency;
    html.push_str(&bar_chart(
        "End-to-end latency percentiles",
        "ms",
        &[
            ("p50", l.p50_ms),
            ("p90", l.p90_ms),
            ("p99", l.p99_ms),
            ("p99.9", l.p999_ms),
            ("max", l.max_ms),
        ],
    ));
    html.push_str(&bar_chart(
        "Where the time went (median per hop)",
        "ms",
        &[
            ("producer ack", h.producer_ack.p50_ms),
            ("request → consumer", h.broker_to_consumer.p50_ms),
            ("queue (waiter)", h.queue.p50_ms),
            ("service (waiter)", h.service.p50_ms),
            ("reply hand-off", h.reply_handoff.p50_ms),
            ("reply consume", h.reply_consume.p50_ms),
        ],
    ));
    html.push_str("<h2>Latency (ms)</h2><table><tr><th></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for (name, p) in [
        ("end to end", &report.latency),
        ("send delay", &report.send_delay),
        ("producer ack", &h.producer_ack),
        ("request → consumer", &h.broker_to_consumer),
        ("queue (waiter)", &h.queue),
        ("service (waiter)", &h.service),
        ("reply hand-off", &h.reply_handoff),
        ("reply consume", &h.reply_consume),
    ] {
        html.push_str(&percentile_row(name, p));
    }
    html.push_str("</table><h2>Timestamps and limits</h2><ul>");
    for note in h.timestamp_types.iter().chain(&h.unsplit) {
        let _ = write!(html, "<li>{}</li>", escape(note));
    }
    html.push_str("</ul></body></html>\n");
    html
}
