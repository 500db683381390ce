//! Read models in the state table, written by the orchestrator from replayed state:
//!
//! - `<tenant>#EXEC#<id>` / `SUMMARY`: the execution summary, written only forwards (a stale turn
//!   never overwrites a newer one). Listed per workflow through the `wf_execs` index
//!   (`<tenant>#WF#<workflow>#EXECS`) and per tenant through `tenant_execs` (`<tenant>#EXECS`),
//!   newest first by `<started_at>#<id>` (migration 0010). Both indexes project only the keys and
//!   `status`, which change twice in a run, so a rewritten summary costs no index write; a
//!   listing reads the summaries it found by BatchGetItem, 25 at a time. A turn rewrites the
//!   summary only when what it shows apart from progress changes ([`Projections::refresh_summary`]).
//! - `TIMERS#<n>` / `<due>#<stream>#<timer id>`: due times of pending timers for the timer function,
//!   spread over [`TIMER_SHARDS`] partitions by stream (no single hot partition for every tenant's
//!   timers; one execution's timers stay together).
//!
//! Workflow statistics are derived from the summaries at read time (see [`WorkflowStats`]), so
//! they can never disagree with them and need no counters that a redelivery could double.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::execution::Summary;

/// Timer partitions `TIMERS#0` .. `TIMERS#7`.
pub const TIMER_SHARDS: u32 = 8;
/// Executions the statistics look at: the most recent ones.
pub const STATS_WINDOW: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("state table: {0}")]
    Backend(String),
    #[error("{0}")]
    BadCursor(String),
}

fn backend<E: std::error::Error + 'static>(e: E) -> ProjectionError {
    ProjectionError::Backend(DisplayErrorContext(e).to_string())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SummaryItem {
    pk: String,
    sk: String,
    // Default: a summary from before migration 0009 has only the previous listing keys.
    #[serde(default)]
    wf_execs_pk: String,
    #[serde(default)]
    tenant_execs_pk: String,
    #[serde(default)]
    execs_sk: String,
    /// The previous release's listing keys (gsi1, gsi2; same strings), written only until
    /// migration 0010 has switched listings over: see [`SchemaMarker`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2sk: Option<String>,
    tenant: String,
    /// Only while running: the sparse `active` index (migration 0006) lists executions by when
    /// they last made progress, for the sweep that finds stalled ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_at: Option<i64>,
    /// Fingerprint of [`Summary::without_progress`]: what a turn compares before rewriting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shown: Option<String>,
    #[serde(flatten)]
    summary: Summary,
}

/// `active_at` is rounded down to this many seconds: successive summary writes of a busy
/// execution then keep the `active` index key, which costs no index write, where a changed key
/// costs a delete and a put. An execution may look idle to the stall sweep this much sooner; the
/// sweep only moves or fails what nothing else can move, and looks after at least 60 s.
const ACTIVE_BUCKET_SECS: i64 = 30;

/// A running execution's `active_at` is refreshed at least this often while it takes turns (by
/// the orchestrator's summary, or by the worker that drives it), so the `active` index (and the
/// sweep and health check reading it) sees it moving even when nothing a summary shows changes.
const ACTIVE_REFRESH_SECS: i64 = 60;

/// Whether a running execution's `active_at` mark is due a refresh at `now` (the one rule for
/// the orchestrator's summary and the worker that drives an execution without it).
pub fn activity_due(active_at: Option<i64>, now: DateTime<Utc>) -> bool {
    active_at.is_none_or(|at| at + ACTIVE_REFRESH_SECS <= active_bucket(now))
}

/// Identifies what a stored summary shows apart from progress (see
/// [`Summary::without_progress`]); 16 bytes of SHA-256 in hex.
fn shown_fingerprint(summary: &Summary) -> String {
    let json = serde_json::to_vec(&summary.without_progress()).unwrap_or_default();
    hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&json)[..16])
}

fn active_bucket(now: DateTime<Utc>) -> i64 {
    let t = now.timestamp();
    t - t.rem_euclid(ACTIVE_BUCKET_SECS)
}

/// Partitions of the `active` index.
pub const ACTIVE_SHARDS: u32 = 8;
pub const ACTIVE_INDEX: &str = "active";
/// The execution listings (migration 0010): keys and `status` only.
pub const WF_EXECS_INDEX: &str = "wf_execs";
pub const TENANT_EXECS_INDEX: &str = "tenant_execs";

/// DynamoDB's answer to a Query of an index that does not exist yet, or is still being built
/// ("The table does not have the specified index", "Cannot read from backfilling global
/// secondary index").
fn index_not_ready<E: ProvideErrorMetadata>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> bool {
    e.as_service_error().is_some_and(|s| {
        s.code() == Some("ValidationException")
            && s.message().is_some_and(|m| {
                m.contains("does not have the specified index") || m.contains("backfilling")
            })
    })
}

/// Neither set of listing indexes answered (a stack before its first migration run).
fn no_listing_index(e: Option<ProjectionError>) -> ProjectionError {
    e.unwrap_or_else(|| ProjectionError::Backend("no execution listing index".into()))
}

/// Which indexes a listing reads: the current ones (migration 0010) or the previous release's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Current,
    Previous,
}

/// An execution listing's index and key attribute names. Both variants hold the same strings, so
/// a cursor names them neutrally (`lpk`, `lsk`) and stays good when a listing moves between them.
struct ListingKeys {
    index: &'static str,
    pk: &'static str,
    sk: &'static str,
}

impl ListingKeys {
    fn of(variant: Variant, per_workflow: bool) -> Self {
        let (index, pk, sk) = match (variant, per_workflow) {
            (Variant::Current, true) => (WF_EXECS_INDEX, "wf_execs_pk", "execs_sk"),
            (Variant::Current, false) => (TENANT_EXECS_INDEX, "tenant_execs_pk", "execs_sk"),
            (Variant::Previous, true) => ("gsi1", "gsi1pk", "gsi1sk"),
            (Variant::Previous, false) => ("gsi2", "gsi2pk", "gsi2sk"),
        };
        Self { index, pk, sk }
    }

    /// The cursor after `entry` (an index entry, or a Query's LastEvaluatedKey).
    fn cursor(&self, entry: &HashMap<String, AttributeValue>) -> String {
        let mut key = HashMap::new();
        for (from, to) in [
            ("pk", "pk"),
            ("sk", "sk"),
            (self.pk, "lpk"),
            (self.sk, "lsk"),
        ] {
            if let Some(v) = entry.get(from) {
                key.insert(to.to_owned(), v.clone());
            }
        }
        crate::aws::cursor::encode(key)
    }

    /// The ExclusiveStartKey of `cursor`, if it belongs to the listing of partition `pk`. Cursors
    /// handed out before the neutral names (gsi1/gsi2 names) are read too.
    fn start_key(
        &self,
        cursor: &str,
        pk: &str,
    ) -> Result<HashMap<String, AttributeValue>, &'static str> {
        let neutral = crate::aws::cursor::decode(cursor, "lpk", pk)
            .map(|k| (k, "lpk", "lsk"))
            .or_else(|_| {
                [("gsi1pk", "gsi1sk"), ("gsi2pk", "gsi2sk")]
                    .into_iter()
                    .find_map(|(p, s)| {
                        crate::aws::cursor::decode(cursor, p, pk)
                            .ok()
                            .map(|k| (k, p, s))
                    })
                    .ok_or(crate::aws::cursor::INVALID)
            });
        let (key, lpk, lsk) = neutral?;
        let mut start = HashMap::new();
        for (from, to) in [("pk", "pk"), ("sk", "sk"), (lpk, self.pk), (lsk, self.sk)] {
            match key.get(from) {
                Some(v @ AttributeValue::S(_)) => start.insert(to.to_owned(), v.clone()),
                _ => return Err(crate::aws::cursor::INVALID),
            };
        }
        Ok(start)
    }
}

/// One page of a listing; `next_cursor` continues it.
#[derive(Debug, Clone, Serialize)]
pub struct Listing<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Where an execution is, as last projected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub ended: bool,
    /// Redrives so far.
    pub epoch: u32,
    /// Attempts were given up while a worker may hold their task (see `ExecutionState::stray_tasks`).
    pub stray_tasks: bool,
    /// The `active` index's mark (running executions only), see [`activity_due`].
    pub active_at: Option<i64>,
}

impl Progress {
    /// Whether work of `epoch` is moot: an earlier epoch (a redrive replaced it), or the
    /// execution ended in that epoch or later.
    pub fn supersedes(&self, epoch: u32) -> bool {
        epoch < self.epoch || (self.ended && epoch <= self.epoch)
    }
}

/// A timer row due for firing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerRow {
    pub pk: String,
    pub sk: String,
    pub stream_id: String,
    pub timer_id: String,
    pub due_at: DateTime<Utc>,
    pub expires_at: i64,
    /// Times firing it failed; it is retried later each time.
    #[serde(default)]
    pub failures: u32,
}

impl TimerRow {
    /// The row of a timer due at `due_at`: the one spelling of its key, for put and delete.
    pub fn new(stream_id: &str, timer_id: &str, due_at: DateTime<Utc>) -> Self {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(stream_id.as_bytes());
        Self {
            pk: format!("TIMERS#{}", u32::from(digest[0]) % TIMER_SHARDS),
            sk: format!(
                "{}#{stream_id}#{timer_id}",
                due_at.to_rfc3339_opts(SecondsFormat::Millis, true)
            ),
            stream_id: stream_id.to_owned(),
            timer_id: timer_id.to_owned(),
            due_at,
            // A row nobody fired (its execution ended) goes away after a week.
            expires_at: due_at.timestamp() + 7 * 24 * 3600,
            failures: 0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkflowStats {
    pub runs: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// Succeeded / finished, over the runs looked at.
    pub success_rate: Option<f64>,
    pub median_duration_ms: Option<i64>,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// True when only the most recent [`STATS_WINDOW`] runs were counted.
    pub windowed: bool,
}

impl WorkflowStats {
    pub fn of(summaries: &[Summary]) -> Self {
        let mut s = WorkflowStats {
            runs: summaries.len(),
            ..Self::default()
        };
        let mut durations = Vec::new();
        let mut costs = Vec::with_capacity(summaries.len());
        for x in summaries {
            match x.status.as_str() {
                "succeeded" => s.succeeded += 1,
                "failed" => s.failed += 1,
                "cancelled" => s.cancelled += 1,
                _ => s.running += 1,
            }
            if let (Some(d), "succeeded" | "failed") = (x.duration_ms, x.status.as_str()) {
                durations.push(d);
            }
            costs.push(x.cost_usd);
            s.input_tokens += x.input_tokens;
            s.output_tokens += x.output_tokens;
        }
        // Summed in one order whatever order the summaries came in (floating-point addition is
        // not associative): the same runs always give the same total.
        costs.sort_unstable_by(f64::total_cmp);
        s.cost_usd = costs.iter().sum();
        let finished = s.succeeded + s.failed;
        s.success_rate = (finished > 0).then(|| s.succeeded as f64 / finished as f64);
        durations.sort_unstable();
        s.median_duration_ms = match durations.len() {
            0 => None,
            n if n % 2 == 1 => Some(durations[n / 2]),
            n => Some((durations[n / 2 - 1] + durations[n / 2]) / 2),
        };
        s
    }
}

#[derive(Clone)]
pub struct Projections {
    client: Client,
    table: String,
    /// Migration 0010's marker: summaries may leave out the previous listing keys.
    listings: Arc<SchemaMarker>,
    /// Migration 0011's marker: workers may decide plain successors (see `Worker::advance`).
    worker_decides: Arc<SchemaMarker>,
    page_bytes: usize,
}

/// A marker item a migration puts as its last step and its down deletes first, for behaviour a
/// release may switch on only once the migration has run. The release runs before its migrations
/// (the migrator runs after a deploy, so after the stack's stream mappings and indexes are in
/// place) and may outlive their revert (`down` runs before the code is rolled back). Unknown (the
/// lookup failed) counts as absent: the behaviour before the migration is always safe, only
/// dearer; the next call looks again.
struct SchemaMarker {
    sk: &'static str,
    /// How long an answer is trusted (per process); each lookup is one GetItem.
    ttl: std::time::Duration,
    last: std::sync::Mutex<Option<(std::time::SystemTime, bool)>>,
}

impl SchemaMarker {
    fn new(sk: &'static str, ttl: std::time::Duration) -> Arc<Self> {
        Arc::new(Self {
            sk,
            ttl,
            last: std::sync::Mutex::new(None),
        })
    }

    /// Wall-clock time, so an environment thawed after hours asks again at once.
    async fn present(&self, client: &Client, table: &str) -> bool {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, present)) = last {
            if at.elapsed().is_ok_and(|age| age < self.ttl) {
                return present;
            }
        }
        // The answer's age counts from before the request: it may be that old when it arrives.
        let asked = std::time::SystemTime::now();
        let found = client
            .get_item()
            .table_name(table)
            .key("pk", s(MARKER_PK))
            .key("sk", s(self.sk))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await;
        match found {
            Ok(out) => {
                let present = out.item.is_some();
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((asked, present));
                present
            }
            Err(e) => {
                tracing::error!(marker = self.sk, error = %DisplayErrorContext(&e), "schema marker: GetItem failed; taken as absent for a while");
                // Remembered too, so a throttled table is not asked again on every call.
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((asked, false));
                false
            }
        }
    }
}

/// How long a marker's answer is trusted: a minute, so a revert is seen by every warm function
/// within a minute (the README's rollback steps wait that long).
pub const LISTING_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

const MARKER_PK: &str = "SCHEMA";
/// Put by migration 0010 once its indexes are active and complete.
const LISTINGS_MARKER: &str = "EXECUTION_LISTINGS";
/// Put by migration 0011 once the stream mappings deliver outcomes carrying tasks to workers.
const WORKER_DECIDES_MARKER: &str = "WORKER_DECIDES";

/// A listing page stops adding summaries past this many bytes of JSON (outputs can be large; a
/// Lambda response is at most 6 MB); its cursor continues after the last one it holds. Summaries
/// are read this many at a time, in order, so a full page reads little past what it returns.
const PAGE_BYTES: usize = 1 << 20;
const READ_SLICE: usize = 25;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn order_key(summary: &Summary) -> String {
    let started = summary
        .started_at
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default();
    format!("{started}#{}", summary.execution_id)
}

impl Projections {
    pub fn new(client: Client, table: String) -> Self {
        Self::with_listing_check(client, table, LISTING_CHECK)
    }

    /// With the migrations' markers looked up again after `ttl` (tests: zero, every call).
    pub fn with_listing_check(client: Client, table: String, ttl: std::time::Duration) -> Self {
        Self {
            client,
            table,
            listings: SchemaMarker::new(LISTINGS_MARKER, ttl),
            worker_decides: SchemaMarker::new(WORKER_DECIDES_MARKER, ttl),
            page_bytes: PAGE_BYTES,
        }
    }

    /// With listing pages cut at `bytes` of summaries (tests: a page cut before moto's own 1 MB
    /// Query page, which moto counts over whole items where AWS counts index entries).
    pub fn with_page_bytes(mut self, bytes: usize) -> Self {
        self.page_bytes = bytes;
        self
    }

    /// Whether summaries can leave out the previous listing keys (migration 0010's marker).
    async fn listings_switched(&self) -> bool {
        self.listings.present(&self.client, &self.table).await
    }

    /// Whether workers may append the decisions an outcome leads to inside it (migration 0011's
    /// marker): only once the workers' stream filter delivers such outcomes to them.
    pub async fn workers_decide(&self) -> bool {
        self.worker_decides.present(&self.client, &self.table).await
    }

    fn summary_key(tenant: &str, execution_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), s(format!("{tenant}#EXEC#{execution_id}"))),
            ("sk".to_owned(), s("SUMMARY")),
        ])
    }

    fn summary_item(
        tenant: &str,
        summary: &Summary,
        previous_keys: bool,
    ) -> Result<HashMap<String, AttributeValue>, ProjectionError> {
        let order = order_key(summary);
        let wf_execs_pk = format!("{tenant}#WF#{}#EXECS", summary.workflow_id);
        let tenant_execs_pk = format!("{tenant}#EXECS");
        let previous = |v: &String| previous_keys.then(|| v.clone());
        let item = SummaryItem {
            pk: format!("{tenant}#EXEC#{}", summary.execution_id),
            sk: "SUMMARY".into(),
            gsi1pk: previous(&wf_execs_pk),
            gsi1sk: previous(&order),
            gsi2pk: previous(&tenant_execs_pk),
            gsi2sk: previous(&order),
            wf_execs_pk,
            tenant_execs_pk,
            execs_sk: order,
            tenant: tenant.to_owned(),
            active_shard: (summary.status == "running").then(|| {
                let digest =
                    <sha2::Sha256 as sha2::Digest>::digest(summary.execution_id.as_bytes());
                format!("ACTIVE#{}", u32::from(digest[0]) % ACTIVE_SHARDS)
            }),
            active_at: (summary.status == "running").then(|| active_bucket(Utc::now())),
            shown: Some(shown_fingerprint(summary)),
            summary: summary.clone(),
        };
        serde_dynamo::to_item(&item).map_err(|e| ProjectionError::Backend(e.to_string()))
    }

    /// Writes the summary unless a newer one is stored. Returns whether it was written.
    pub async fn write_summary(
        &self,
        tenant: &str,
        summary: &Summary,
    ) -> Result<bool, ProjectionError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::summary_item(
                tenant,
                summary,
                !self.listings_switched().await,
            )?))
            .condition_expression("attribute_not_exists(pk) OR version < :v")
            .expression_attribute_values(":v", AttributeValue::N(summary.version.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    /// The turn's summary, written only when the stored one differs in what it shows apart from
    /// progress, is older than `summary`, and (while running) its activity mark is due a refresh.
    /// A strongly consistent read (billed on the item's size, like the write, at a fifth of the
    /// price; a running summary is one unit) stands in for a write and its index writes on most
    /// turns. Returns whether it was written.
    ///
    /// Not atomic with the write: a turn racing another writer of the same execution (the
    /// sweep's turn) may skip a rewrite the other's older state made stale; the next change or
    /// refresh repairs it, and listings read a running execution's progress from its events.
    pub async fn refresh_summary(
        &self,
        tenant: &str,
        summary: &Summary,
    ) -> Result<bool, ProjectionError> {
        let stored = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::summary_key(tenant, &summary.execution_id)))
            .projection_expression("version, shown, active_at")
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?
            .item;
        if let Some(stored) = stored {
            let number = |k: &str| match stored.get(k) {
                Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
                _ => None,
            };
            let newer = number("version").is_none_or(|v| v < summary.version as i64);
            let same = matches!(stored.get("shown"), Some(AttributeValue::S(f)) if *f == shown_fingerprint(summary));
            let fresh =
                summary.status != "running" || !activity_due(number("active_at"), Utc::now());
            if !newer || (same && fresh) {
                return Ok(false);
            }
        }
        self.write_summary(tenant, summary).await
    }

    /// Running executions that made no progress since `before`, as (tenant, execution id), at
    /// most `limit` per shard, the longest idle first.
    pub async fn idle_since(
        &self,
        before: DateTime<Utc>,
        limit: i32,
    ) -> Result<Vec<(String, String)>, ProjectionError> {
        let mut found = Vec::new();
        for shard in 0..ACTIVE_SHARDS {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(ACTIVE_INDEX)
                .key_condition_expression("active_shard = :s AND active_at < :before")
                .expression_attribute_values(":s", s(format!("ACTIVE#{shard}")))
                .expression_attribute_values(
                    ":before",
                    AttributeValue::N(before.timestamp().to_string()),
                )
                .limit(limit)
                .send()
                .await
                .map_err(backend)?;
            for item in out.items.unwrap_or_default() {
                if let Some(AttributeValue::S(pk)) = item.get("pk") {
                    if let Some((tenant, id)) = pk.split_once("#EXEC#") {
                        found.push((tenant.to_owned(), id.to_owned()));
                    }
                }
            }
        }
        Ok(found)
    }

    /// Marks a running execution as looked at now (it is waiting on purpose: a timer, a task in
    /// flight, a person), so the sweep comes back to it only after another idle period.
    pub async fn touch_active(
        &self,
        tenant: &str,
        execution_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::summary_key(tenant, execution_id)))
            .update_expression("SET active_at = :at")
            // Never back: a racing writer may have set a later bucket.
            .condition_expression(
                "attribute_exists(active_shard) AND (attribute_not_exists(active_at) OR active_at < :at)",
            )
            .expression_attribute_values(":at", AttributeValue::N(active_bucket(at).to_string()))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    /// Writes the summary whatever is stored (a rebuild from events).
    pub async fn replace_summary(
        &self,
        tenant: &str,
        summary: &Summary,
    ) -> Result<(), ProjectionError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::summary_item(
                tenant,
                summary,
                !self.listings_switched().await,
            )?))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Removes a summary (tests of the rebuild; an operator dropping a read model).
    pub async fn delete_summary(
        &self,
        tenant: &str,
        execution_id: &str,
    ) -> Result<(), ProjectionError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::summary_key(tenant, execution_id)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The execution's status and epoch as last projected (`consistent`: a strongly consistent
    /// read). A small read: the listing summary has no per-step detail.
    pub async fn progress(
        &self,
        tenant: &str,
        execution_id: &str,
        consistent: bool,
    ) -> Result<Option<Progress>, ProjectionError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::summary_key(tenant, execution_id)))
            .projection_expression("#s, epoch, stray_tasks, active_at")
            .expression_attribute_names("#s", "status")
            .consistent_read(consistent)
            .send()
            .await
            .map_err(backend)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let Some(AttributeValue::S(status)) = item.get("status") else {
            return Ok(None);
        };
        let number = |k: &str| match item.get(k) {
            Some(AttributeValue::N(n)) => n.parse::<u64>().unwrap_or(0),
            _ => 0,
        };
        Ok(Some(Progress {
            ended: matches!(status.as_str(), "succeeded" | "failed" | "cancelled"),
            epoch: number("epoch") as u32,
            stray_tasks: number("stray_tasks") > 0,
            active_at: item
                .contains_key("active_at")
                .then(|| number("active_at") as i64),
        }))
    }

    pub async fn summary(
        &self,
        tenant: &str,
        execution_id: &str,
    ) -> Result<Option<Summary>, ProjectionError> {
        let item: Option<SummaryItem> = crate::aws::get_item(
            &self.client,
            &self.table,
            Self::summary_key(tenant, execution_id),
        )
        .await
        .map_err(ProjectionError::Backend)?;
        Ok(item.map(|i| i.summary))
    }

    /// Executions of a tenant, or of one workflow, newest first from `cursor`, optionally only
    /// those with `status`. The index gives keys and status; the summaries come by BatchGetItem
    /// (eventually consistent, like the index), in the index's order. Until migration 0010's
    /// indexes exist, the previous release's indexes answer (same order, same cursors).
    pub async fn list(
        &self,
        tenant: &str,
        workflow_id: Option<&str>,
        status: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Listing<Summary>, ProjectionError> {
        match self
            .list_from(Variant::Current, tenant, workflow_id, status, limit, cursor)
            .await
        {
            Err(None) => self
                .list_from(
                    Variant::Previous,
                    tenant,
                    workflow_id,
                    status,
                    limit,
                    cursor,
                )
                .await
                .map_err(no_listing_index),
            other => other.map_err(Option::unwrap),
        }
    }

    /// One page from one set of indexes; `Err(None)`: that index is not there (not built yet,
    /// or reverted).
    async fn list_from(
        &self,
        variant: Variant,
        tenant: &str,
        workflow_id: Option<&str>,
        status: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Listing<Summary>, Option<ProjectionError>> {
        let keys = ListingKeys::of(variant, workflow_id.is_some());
        let pk = match workflow_id {
            Some(wf) => format!("{tenant}#WF#{wf}#EXECS"),
            None => format!("{tenant}#EXECS"),
        };
        let start = cursor
            .map(|c| keys.start_key(c, &pk))
            .transpose()
            .map_err(|e| Some(ProjectionError::BadCursor(e.into())))?;
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys.index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", keys.pk)
            .expression_attribute_values(":pk", s(pk.clone()))
            .set_exclusive_start_key(start)
            .scan_index_forward(false)
            .limit(limit.clamp(1, 100) as i32);
        if let Some(status) = status {
            q = q
                .filter_expression("#status = :status")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status));
        }
        let out = q
            .send()
            .await
            .map_err(|e| (!index_not_ready(&e)).then(|| backend(e)))?;
        let entries = out.items.unwrap_or_default();
        let pk_of = |entry: &HashMap<String, AttributeValue>| match entry.get("pk") {
            Some(AttributeValue::S(pk)) => Some(pk.clone()),
            _ => None,
        };
        let mut items = Vec::with_capacity(entries.len());
        let mut bytes = 0;
        for (slice_at, slice) in entries.chunks(READ_SLICE).enumerate() {
            // The previous indexes project whole summaries; the current ones only keys.
            let mut by_pk: HashMap<String, Summary> = HashMap::with_capacity(slice.len());
            let found = match variant {
                Variant::Previous => slice.to_vec(),
                Variant::Current => {
                    let wanted = slice
                        .iter()
                        .filter_map(pk_of)
                        .map(Self::summary_key_of)
                        .collect();
                    crate::aws::batch_get(&self.client, &self.table, wanted, false)
                        .await
                        .map_err(|e| Some(ProjectionError::Backend(e.to_string())))?
                }
            };
            for item in found {
                let item: SummaryItem = serde_dynamo::from_item(item)
                    .map_err(|e| Some(ProjectionError::Backend(e.to_string())))?;
                by_pk.insert(item.pk, item.summary);
            }
            for (j, entry) in slice.iter().enumerate() {
                // A summary gone since the index saw it (an operator dropped it) is left out,
                // and so is one whose status moved on past the filter in between.
                let Some(summary) = pk_of(entry).and_then(|pk| by_pk.remove(&pk)) else {
                    continue;
                };
                if status.is_some_and(|want| summary.status != want) {
                    continue;
                }
                bytes += serde_json::to_vec(&summary).map_or(0, |v| v.len());
                if !items.is_empty() && bytes > self.page_bytes {
                    // Full: the next page starts after the entry before this one.
                    let before = &entries[slice_at * READ_SLICE + j - 1];
                    return Ok(Listing {
                        items,
                        next_cursor: Some(keys.cursor(before)),
                    });
                }
                items.push(summary);
            }
        }
        Ok(Listing {
            items,
            next_cursor: out
                .last_evaluated_key
                .filter(|k| !k.is_empty())
                .map(|k| keys.cursor(&k)),
        })
    }

    fn summary_key_of(pk: String) -> HashMap<String, AttributeValue> {
        HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s("SUMMARY"))])
    }

    /// Statistics over a workflow's most recent runs.
    pub async fn workflow_stats(
        &self,
        tenant: &str,
        workflow_id: &str,
    ) -> Result<WorkflowStats, ProjectionError> {
        match self.recent_runs(tenant, workflow_id).await {
            Ok((summaries, windowed)) => {
                return Ok(WorkflowStats {
                    windowed,
                    ..WorkflowStats::of(&summaries)
                })
            }
            Err(Some(e)) => return Err(e),
            Err(None) => {}
        }
        // Before migration 0010's indexes exist: pages of the previous index.
        let mut summaries = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .list_from(
                    Variant::Previous,
                    tenant,
                    Some(workflow_id),
                    None,
                    100,
                    cursor.as_deref(),
                )
                .await
                .map_err(no_listing_index)?;
            summaries.extend(page.items);
            cursor = page.next_cursor;
            if cursor.is_none() || summaries.len() > STATS_WINDOW {
                break;
            }
        }
        let windowed = summaries.len() > STATS_WINDOW;
        summaries.truncate(STATS_WINDOW);
        Ok(WorkflowStats {
            windowed,
            ..WorkflowStats::of(&summaries)
        })
    }

    /// The summaries of a workflow's most recent [`STATS_WINDOW`] runs and whether there are
    /// more: the keys from the index in as few pages as its 1 MB page allows (an entry is about
    /// 150 bytes), then the summaries by BatchGetItem, a few chunks at a time. `Err(None)`: the
    /// index is not there.
    async fn recent_runs(
        &self,
        tenant: &str,
        workflow_id: &str,
    ) -> Result<(Vec<Summary>, bool), Option<ProjectionError>> {
        use futures::StreamExt as _;
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(WF_EXECS_INDEX)
                .key_condition_expression("wf_execs_pk = :pk")
                .expression_attribute_values(":pk", s(format!("{tenant}#WF#{workflow_id}#EXECS")))
                .set_exclusive_start_key(start)
                .scan_index_forward(false)
                .limit((STATS_WINDOW + 1 - keys.len()) as i32)
                .send()
                .await
                .map_err(|e| (!index_not_ready(&e)).then(|| backend(e)))?;
            keys.extend(
                out.items
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|entry| match entry.get("pk") {
                        Some(AttributeValue::S(pk)) => Some(Self::summary_key_of(pk.clone())),
                        _ => None,
                    }),
            );
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() && keys.len() <= STATS_WINDOW => start = Some(k),
                _ => break,
            }
        }
        let windowed = keys.len() > STATS_WINDOW;
        keys.truncate(STATS_WINDOW);
        // Three requests at a time: a few in flight, not ten. The statistics do not depend on
        // the order the summaries arrive in.
        let chunks: Vec<Vec<_>> = keys.chunks(100).map(<[_]>::to_vec).collect();
        let (client, table) = (&self.client, &self.table);
        let pages: Vec<_> = futures::stream::iter(chunks)
            .map(|chunk| crate::aws::batch_get(client, table, chunk, false))
            .buffered(3)
            .collect()
            .await;
        let mut found = Vec::with_capacity(keys.len());
        for items in pages {
            for item in items.map_err(|e| Some(ProjectionError::Backend(e.to_string())))? {
                let item: SummaryItem = serde_dynamo::from_item(item)
                    .map_err(|e| Some(ProjectionError::Backend(e.to_string())))?;
                found.push(item.summary);
            }
        }
        Ok((found, windowed))
    }

    pub async fn put_timer(
        &self,
        stream_id: &str,
        timer_id: &str,
        due_at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        self.put_timer_row(&TimerRow::new(stream_id, timer_id, due_at))
            .await
    }

    async fn put_timer_row(&self, row: &TimerRow) -> Result<(), ProjectionError> {
        let item =
            serde_dynamo::to_item(row).map_err(|e| ProjectionError::Backend(e.to_string()))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// A timer that could not be fired now: its row moves to `retry_at` (one more failure
    /// counted), so it neither blocks the rows behind it nor is retried in a tight loop.
    /// Counts one more subworkflow execution of the family of `root`; `false` when it already
    /// has `max`.
    pub async fn count_descendant(
        &self,
        tenant: &str,
        root: &str,
        max: u32,
    ) -> Result<bool, ProjectionError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("{tenant}#EXEC#{root}")))
            .key("sk", s("DESCENDANTS"))
            .update_expression("ADD descendants :one SET expires_at = :expires")
            .condition_expression("attribute_not_exists(descendants) OR descendants < :max")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":max", AttributeValue::N(max.to_string()))
            .expression_attribute_values(
                ":expires",
                AttributeValue::N((Utc::now().timestamp() + 400 * 24 * 3600).to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    /// Moves a timer's row back in its queue to `retry_at`, counting a failure when `failed`
    /// (a lost race on a busy stream is not one).
    pub async fn postpone_timer(
        &self,
        row: &TimerRow,
        retry_at: DateTime<Utc>,
        failed: bool,
    ) -> Result<(), ProjectionError> {
        let mut moved = TimerRow::new(&row.stream_id, &row.timer_id, retry_at);
        moved.failures = row.failures + u32::from(failed);
        moved.due_at = row.due_at;
        self.put_timer_row(&moved).await?;
        self.delete_timer(row).await
    }

    pub async fn delete_timer(&self, row: &TimerRow) -> Result<(), ProjectionError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(row.pk.clone()))
            .key("sk", s(row.sk.clone()))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Timers of one shard due at `now`, earliest first, one page from `start` (the previous
    /// page's last row); the second value continues the listing.
    pub async fn due_timers(
        &self,
        shard: u32,
        now: DateTime<Utc>,
        limit: u32,
        start: Option<&TimerRow>,
    ) -> Result<(Vec<TimerRow>, bool), ProjectionError> {
        // `~` sorts after every character a stream id or timer id uses.
        let upper = format!("{}~", now.to_rfc3339_opts(SecondsFormat::Millis, true));
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk <= :upper")
            .expression_attribute_values(":pk", s(format!("TIMERS#{shard}")))
            .expression_attribute_values(":upper", s(upper))
            .set_exclusive_start_key(start.map(|r| {
                HashMap::from([
                    ("pk".to_owned(), s(r.pk.clone())),
                    ("sk".to_owned(), s(r.sk.clone())),
                ])
            }))
            .consistent_read(true)
            .limit(limit as i32)
            .send()
            .await
            .map_err(backend)?;
        let more = out.last_evaluated_key.is_some_and(|k| !k.is_empty());
        let rows = serde_dynamo::from_items(out.items.unwrap_or_default())
            .map_err(|e| ProjectionError::Backend(e.to_string()))?;
        Ok((rows, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_rounds_down_to_its_bucket() {
        let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap();
        assert_eq!(active_bucket(at(1_800_000_000)), 1_800_000_000);
        assert_eq!(active_bucket(at(1_800_000_001)), 1_800_000_000);
        assert_eq!(active_bucket(at(1_800_000_029)), 1_800_000_000);
        assert_eq!(active_bucket(at(1_800_000_031)), 1_800_000_030);
    }
}
