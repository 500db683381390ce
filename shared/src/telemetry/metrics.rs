//! Metrics as CloudWatch Embedded Metric Format: one JSON line per data point on stdout, which
//! CloudWatch Logs turns into metrics with no agent and no API call. Names follow the seed
//! (`api_requests_total`, `jwt_validations_total`, `event_store_events_total`, ...).

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "WorkflowEngine";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Bytes,
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
            Unit::None => "None",
        }
    }
}

/// Pure: the EMF document for one data point at `timestamp_ms`.
pub fn emf_line(
    name: &str,
    value: f64,
    unit: Unit,
    dimensions: &[(&str, &str)],
    timestamp_ms: i64,
) -> String {
    let mut doc = Map::new();
    let keys: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [keys],
                "Metrics": [{"Name": name, "Unit": unit.as_str()}],
            }],
        }),
    );
    for (k, v) in dimensions {
        doc.insert((*k).to_owned(), Value::String((*v).to_owned()));
    }
    doc.insert(name.to_owned(), json!(value));
    Value::Object(doc).to_string()
}

/// Writes one data point. Metrics are off when `METRICS=off` (read once).
pub fn emit(name: &str, value: f64, unit: Unit, dimensions: &[(&str, &str)]) {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var("METRICS").is_ok_and(|v| v == "off")) {
        return;
    }
    println!(
        "{}",
        emf_line(
            name,
            value,
            unit,
            dimensions,
            chrono::Utc::now().timestamp_millis()
        )
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_is_a_cloudwatch_metric_document() {
        let line = emf_line(
            "api_requests_total",
            1.0,
            Unit::Count,
            &[("tenant", "t1"), ("route", "GET /health")],
            1_700_000_000_000,
        );
        let doc: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["api_requests_total"], 1.0);
        assert_eq!(doc["tenant"], "t1");
        assert_eq!(doc["route"], "GET /health");
        let m = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], NAMESPACE);
        assert_eq!(m["Dimensions"][0], json!(["tenant", "route"]));
        assert_eq!(m["Metrics"][0]["Name"], "api_requests_total");
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }
}
