//! The usage ledger: one item per step attempt that spent tokens, written by the orchestrator from
//! the events (idempotent: keyed by the event), read by `GET /usage`.
//!
//! `<tenant>#USAGE#<yyyy-mm-dd>` / `<execution>#<event version>`: workflow, step, model, tokens,
//! cost. One partition per tenant and day keeps a report a handful of queries.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Longest report range.
pub const MAX_DAYS: i64 = 92;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub execution_id: String,
    pub workflow_id: String,
    pub step: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    pk: String,
    sk: String,
    #[serde(flatten)]
    record: UsageRecord,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Total {
    pub key: String,
    pub steps: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Month,
    Workflow,
    Model,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "day" => Self::Day,
            "month" => Self::Month,
            "workflow" => Self::Workflow,
            "model" => Self::Model,
            _ => return None,
        })
    }

    fn key(self, r: &UsageRecord) -> String {
        match self {
            Self::Day => r.at.format("%Y-%m-%d").to_string(),
            Self::Month => r.at.format("%Y-%m").to_string(),
            Self::Workflow => r.workflow_id.clone(),
            Self::Model => r.model.clone(),
        }
    }
}

/// Sums records per group, in key order.
pub fn totals(records: &[UsageRecord], by: GroupBy) -> Vec<Total> {
    let mut groups: BTreeMap<String, Total> = BTreeMap::new();
    for r in records {
        let key = by.key(r);
        let t = groups.entry(key.clone()).or_insert_with(|| Total {
            key,
            ..Total::default()
        });
        t.steps += 1;
        t.input_tokens += r.input_tokens;
        t.output_tokens += r.output_tokens;
        t.cost_usd += r.cost_usd;
    }
    groups.into_values().collect()
}

#[derive(Clone)]
pub struct UsageLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl UsageLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }

    /// Records one spend; the same event recorded twice is one item.
    pub async fn record(
        &self,
        tenant: &str,
        version: u64,
        record: &UsageRecord,
    ) -> Result<(), String> {
        let item = Item {
            pk: format!("{tenant}#USAGE#{}", record.at.format("%Y-%m-%d")),
            sk: format!("{}#{version:012}", record.execution_id),
            record: record.clone(),
        };
        let item = serde_dynamo::to_item(item).map_err(|e| e.to_string())?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        Ok(())
    }

    /// Every record of the tenant from `from` to `to`, both days included.
    pub async fn between(
        &self,
        tenant: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<UsageRecord>, String> {
        let mut out = Vec::new();
        let mut day = from;
        while day <= to {
            let page = crate::aws::query_partition(
                &self.client,
                &self.table,
                &format!("{tenant}#USAGE#{day}"),
                None,
            )
            .await?;
            let items: Vec<Item> = serde_dynamo::from_items(page).map_err(|e| e.to_string())?;
            out.extend(items.into_iter().map(|i| i.record));
            day = day.succ_opt().ok_or("date out of range")?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(wf: &str, model: &str, day: u32, cost: f64) -> UsageRecord {
        UsageRecord {
            execution_id: "e".into(),
            workflow_id: wf.into(),
            step: "s".into(),
            model: model.into(),
            input_tokens: 10,
            output_tokens: 5,
            cost_usd: cost,
            at: chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, day, 12, 0, 0).unwrap(),
        }
    }

    #[test]
    fn totals_group_by_each_key() {
        let records = [
            r("a", "openai/x", 1, 1.0),
            r("b", "openai/x", 1, 2.0),
            r("a", "anthropic/y", 2, 4.0),
        ];
        let by_day = totals(&records, GroupBy::Day);
        assert_eq!(
            by_day
                .iter()
                .map(|t| (t.key.as_str(), t.cost_usd))
                .collect::<Vec<_>>(),
            [("2026-11-01", 3.0), ("2026-11-02", 4.0)]
        );
        let by_wf = totals(&records, GroupBy::Workflow);
        assert_eq!(
            by_wf
                .iter()
                .map(|t| (t.key.as_str(), t.steps))
                .collect::<Vec<_>>(),
            [("a", 2), ("b", 1)]
        );
        assert_eq!(totals(&records, GroupBy::Model).len(), 2);
        assert_eq!(totals(&records, GroupBy::Month)[0].input_tokens, 30);
    }
}
