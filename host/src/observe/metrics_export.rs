//! The ledger's metrics ([`super::metrics`]) in the two forms they leave the host:
//! Prometheus text exposition format (version 0.0.4, what `agentflow serve` answers on
//! `/metrics`; [`prometheus_text`]) and an OTLP metrics export request
//! ([`otlp_request`], sent to `/v1/metrics`).

use super::metrics::{self, Family, Kind, LedgerMetrics, Point};
use crate::ledger::{Connection, LedgerError};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::fmt::Write as _;

/// The `content-type` of [`prometheus_text`]'s answer.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The ledger's metrics now, as Prometheus text: what `/metrics` answers.
pub fn prometheus_text(conn: &Connection) -> Result<String, LedgerError> {
    Ok(render_prometheus(&metrics::read(conn)?))
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_text(labels: &[(&str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A sample value: integral values without a fraction.
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `metrics` in the Prometheus text format.
pub fn render_prometheus(metrics: &LedgerMetrics) -> String {
    let mut out = String::new();
    for f in &metrics.families {
        let ty = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", f.prom, f.help.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {} {ty}", f.prom);
        for (labels, point) in &f.series {
            let base: Vec<(&str, String)> =
                labels.iter().map(|(l, v)| (l.prom, v.clone())).collect();
            match point {
                Point::Number(v) => {
                    let _ = writeln!(out, "{}{} {}", f.prom, labels_text(&base), number(*v));
                }
                Point::Histogram { counts, sum, count } => {
                    let Kind::Histogram(bounds) = f.kind else {
                        continue;
                    };
                    let mut cumulative = 0;
                    for (i, c) in counts.iter().enumerate() {
                        cumulative += c;
                        let le = bounds.get(i).map_or("+Inf".to_string(), |b| format!("{b}"));
                        let mut l = base.clone();
                        l.push(("le", le));
                        let _ = writeln!(out, "{}_bucket{} {cumulative}", f.prom, labels_text(&l));
                    }
                    let l = labels_text(&base);
                    let _ = writeln!(out, "{}_sum{l} {}", f.prom, number(*sum));
                    let _ = writeln!(out, "{}_count{l} {count}", f.prom);
                }
            }
        }
    }
    out
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn nanos(ms: i64) -> u64 {
    ms.max(0) as u64 * 1_000_000
}

/// `metrics` as an OTLP export request from the resource with these attributes
/// (`service.name`, …).
pub fn otlp_request(
    metrics: &LedgerMetrics,
    resource: &[(String, String)],
) -> ExportMetricsServiceRequest {
    let scope = super::otel::scope();
    let resource = Resource {
        attributes: resource.iter().map(|(k, v)| string_kv(k, v)).collect(),
        ..Default::default()
    };
    let metrics_out = metrics
        .families
        .iter()
        .filter(|f| !f.series.is_empty())
        .map(|f| metric(f, metrics.start_ms, metrics.now_ms))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: scope.name().to_string(),
                    version: scope.version().unwrap_or_default().to_string(),
                    ..Default::default()
                }),
                metrics: metrics_out,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn metric(f: &Family, start_ms: i64, now_ms: i64) -> Metric {
    let (start, now) = (nanos(start_ms), nanos(now_ms));
    let attributes = |labels: &metrics::Labels| -> Vec<KeyValue> {
        labels.iter().map(|(l, v)| string_kv(l.otel, v)).collect()
    };
    let numbers = || -> Vec<NumberDataPoint> {
        f.series
            .iter()
            .filter_map(|(labels, p)| match p {
                Point::Number(v) => Some(NumberDataPoint {
                    attributes: attributes(labels),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    value: Some(if v.fract() == 0.0 && v.abs() < 1e15 {
                        number_data_point::Value::AsInt(*v as i64)
                    } else {
                        number_data_point::Value::AsDouble(*v)
                    }),
                    ..Default::default()
                }),
                Point::Histogram { .. } => None,
            })
            .collect()
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let data = match f.kind {
        Kind::Counter => metric::Data::Sum(Sum {
            data_points: numbers(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        Kind::Gauge => metric::Data::Gauge(Gauge {
            data_points: numbers()
                .into_iter()
                .map(|p| NumberDataPoint {
                    start_time_unix_nano: 0,
                    ..p
                })
                .collect(),
        }),
        Kind::Histogram(bounds) => metric::Data::Histogram(Histogram {
            data_points: f
                .series
                .iter()
                .filter_map(|(labels, p)| match p {
                    Point::Histogram { counts, sum, count } => Some(HistogramDataPoint {
                        attributes: attributes(labels),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        count: *count,
                        sum: Some(*sum),
                        bucket_counts: counts.clone(),
                        explicit_bounds: bounds.to_vec(),
                        ..Default::default()
                    }),
                    Point::Number(_) => None,
                })
                .collect(),
            aggregation_temporality: cumulative,
        }),
    };
    Metric {
        name: f.name.to_string(),
        description: f.help.to_string(),
        unit: f.unit.to_string(),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::{AGENT, Labels, MODEL};

    fn sample() -> LedgerMetrics {
        let mut m = metrics::LedgerMetrics {
            families: Vec::new(),
            start_ms: 1_000,
            now_ms: 2_000,
        };
        let mut calls = Family {
            name: "agentflow.llm.calls",
            prom: "agentflow_llm_calls_total",
            help: "LLM calls.",
            unit: "{call}",
            kind: Kind::Counter,
            series: Default::default(),
        };
        let labels: Labels = vec![(AGENT, "a\"b\\c\nd".into()), (MODEL, "m".into())];
        calls.add(&labels, 2.0);
        calls.add(&labels, 1.0);
        let mut latency = Family {
            name: "agentflow.llm.duration",
            prom: "agentflow_llm_duration_seconds",
            help: "Latency.",
            unit: "s",
            kind: Kind::Histogram(&[0.1, 1.0]),
            series: Default::default(),
        };
        let one: Labels = vec![(MODEL, "m".into())];
        for v in [0.05, 0.5, 0.7, 3.0] {
            latency.observe(&one, v);
        }
        m.families = vec![calls, latency];
        m
    }

    #[test]
    fn prometheus_text_escapes_labels_and_accumulates_buckets() {
        let text = render_prometheus(&sample());
        let expected = "\
# HELP agentflow_llm_calls_total LLM calls.
# TYPE agentflow_llm_calls_total counter
agentflow_llm_calls_total{agent=\"a\\\"b\\\\c\\nd\",model=\"m\"} 3
# HELP agentflow_llm_duration_seconds Latency.
# TYPE agentflow_llm_duration_seconds histogram
agentflow_llm_duration_seconds_bucket{model=\"m\",le=\"0.1\"} 1
agentflow_llm_duration_seconds_bucket{model=\"m\",le=\"1\"} 3
agentflow_llm_duration_seconds_bucket{model=\"m\",le=\"+Inf\"} 4
agentflow_llm_duration_seconds_sum{model=\"m\"} 4.25
agentflow_llm_duration_seconds_count{model=\"m\"} 4
";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_otlp_request_carries_cumulative_sums_and_histograms_with_attribute_keys() {
        let req = otlp_request(&sample(), &[("service.name".into(), "svc".into())]);
        let rm = &req.resource_metrics[0];
        let service = &rm.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        let metrics = &rm.scope_metrics[0].metrics;
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!("{:?}", metrics[0])
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let point = &sum.data_points[0];
        assert_eq!(point.attributes[0].key, "agentflow.agent");
        assert_eq!(point.attributes[1].key, "gen_ai.request.model");
        assert_eq!(point.value, Some(number_data_point::Value::AsInt(3)));
        assert_eq!(point.start_time_unix_nano, 1_000_000_000);
        let Some(metric::Data::Histogram(h)) = &metrics[1].data else {
            panic!()
        };
        assert_eq!(h.data_points[0].bucket_counts, vec![1, 2, 1]);
        assert_eq!(h.data_points[0].explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(metrics[1].unit, "s");
    }
}
