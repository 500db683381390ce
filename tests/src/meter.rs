//! Request units per DynamoDB call, for the cost benchmark: the counting proxy hands each call
//! here, which reads the items it touches straight from the store before and after (uncounted
//! calls, consistent reads) and prices the call by `crate::capacity`. Calls are attributed to the
//! function whose SDK made them (`app/<logical id>` in the User-Agent, see `runner::function_sdk`).
//!
//! Known approximations (all small for this engine): concurrent writes to one item between the
//! before and after reads are attributed to whichever call reads last; a failed transaction is
//! priced as if its items were written (AWS charges capacity for it too), without index writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::{json, Value};

use crate::capacity::{self, Item, Table};

/// DynamoDB usage of one function.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    /// Calls by operation.
    pub calls: BTreeMap<String, u64>,
    pub read_requests: u64,
    pub write_requests: u64,
    /// Read request units.
    pub rru: f64,
    /// Write request units on tables (transactions at twice).
    pub wru: f64,
    /// Write request units on global secondary indexes.
    pub index_wru: f64,
    /// Milliseconds spent in DynamoDB calls (on moto), summed.
    pub ms: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        for (k, v) in &other.calls {
            *self.calls.entry(k.clone()).or_default() += v;
        }
        self.read_requests += other.read_requests;
        self.write_requests += other.write_requests;
        self.rru += other.rru;
        self.wru += other.wru;
        self.index_wru += other.index_wru;
        self.ms += other.ms;
    }
}

/// Usage by function (logical id, or "other" for callers that do not name themselves).
pub type Ledger = Arc<Mutex<BTreeMap<String, Usage>>>;

/// Prices calls against the store at `upstream`.
#[derive(Clone)]
pub struct Meter {
    upstream: String,
    client: reqwest::Client,
    tables: Arc<Mutex<HashMap<String, Table>>>,
    pub ledger: Ledger,
}

/// One item a write touches.
struct Touch {
    table: String,
    key: Item,
    kind: Kind,
    /// The item as written, for a put.
    put: Option<Item>,
    before: Option<Item>,
}

#[derive(PartialEq)]
enum Kind {
    Put,
    Update,
    Delete,
    Check,
}

/// What the meter learned before forwarding a call, to finish after its answer.
pub struct Pending {
    function: String,
    op: String,
    touches: Vec<Touch>,
    transactional: bool,
}

const WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

impl Meter {
    pub fn new(upstream: String) -> Self {
        Self {
            upstream,
            client: reqwest::Client::new(),
            tables: Default::default(),
            ledger: Default::default(),
        }
    }

    /// The calling function, from `app/<name>` in the User-Agent.
    fn function(headers: &HeaderMap) -> String {
        ["x-amz-user-agent", "user-agent"]
            .iter()
            .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
            .flat_map(str::split_whitespace)
            .find_map(|t| t.strip_prefix("app/"))
            .unwrap_or("other")
            .to_owned()
    }

    /// A raw call to the store, not counted (the original call's Authorization carries its region).
    async fn call(&self, headers: &HeaderMap, op: &str, body: &Value) -> Option<Value> {
        let mut req = self
            .client
            .post(&self.upstream)
            .header("x-amz-target", format!("DynamoDB_20120810.{op}"))
            .header("content-type", "application/x-amz-json-1.0")
            .body(body.to_string());
        if let Some(auth) = headers.get("authorization") {
            req = req.header("authorization", auth.as_bytes());
        }
        let r = req.send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    async fn table(&self, headers: &HeaderMap, name: &str) -> Table {
        if let Some(t) = self.tables.lock().unwrap().get(name) {
            return t.clone();
        }
        let t = self
            .call(headers, "DescribeTable", &json!({"TableName": name}))
            .await
            .map(|d| Table::from_description(&d))
            .unwrap_or_default();
        self.tables
            .lock()
            .unwrap()
            .insert(name.to_owned(), t.clone());
        t
    }

    async fn get(&self, headers: &HeaderMap, table: &str, key: &Item) -> Option<Item> {
        self.call(
            headers,
            "GetItem",
            &json!({"TableName": table, "Key": key, "ConsistentRead": true}),
        )
        .await
        .and_then(|r| r["Item"].as_object().cloned())
    }

    /// Before forwarding: the items a write touches, as they are now.
    pub async fn before(&self, headers: &HeaderMap, op: &str, body: &Value) -> Pending {
        let mut touches = Vec::new();
        let obj = |v: &Value| v.as_object().cloned().unwrap_or_default();
        let table_of = |v: &Value| v["TableName"].as_str().unwrap_or_default().to_owned();
        match op {
            "PutItem" => touches.push((table_of(body), Kind::Put, obj(&body["Item"]))),
            "UpdateItem" => touches.push((table_of(body), Kind::Update, obj(&body["Key"]))),
            "DeleteItem" => touches.push((table_of(body), Kind::Delete, obj(&body["Key"]))),
            "TransactWriteItems" => {
                for t in body["TransactItems"].as_array().into_iter().flatten() {
                    if let Some(p) = t.get("Put") {
                        touches.push((table_of(p), Kind::Put, obj(&p["Item"])));
                    } else if let Some(u) = t.get("Update") {
                        touches.push((table_of(u), Kind::Update, obj(&u["Key"])));
                    } else if let Some(d) = t.get("Delete") {
                        touches.push((table_of(d), Kind::Delete, obj(&d["Key"])));
                    } else if let Some(c) = t.get("ConditionCheck") {
                        touches.push((table_of(c), Kind::Check, obj(&c["Key"])));
                    }
                }
            }
            "BatchWriteItem" => {
                for (table, requests) in body["RequestItems"].as_object().into_iter().flatten() {
                    for r in requests.as_array().into_iter().flatten() {
                        if let Some(p) = r.get("PutRequest") {
                            touches.push((table.clone(), Kind::Put, obj(&p["Item"])));
                        } else if let Some(d) = r.get("DeleteRequest") {
                            touches.push((table.clone(), Kind::Delete, obj(&d["Key"])));
                        }
                    }
                }
            }
            _ => {}
        }
        let mut out = Vec::new();
        for (table, kind, item) in touches {
            let shape = self.table(headers, &table).await;
            let (key, put) = if kind == Kind::Put {
                (shape.key_of(&item), Some(item))
            } else {
                (item, None)
            };
            let before = self.get(headers, &table, &key).await;
            out.push(Touch {
                table,
                key,
                kind,
                put,
                before,
            });
        }
        Pending {
            function: Self::function(headers),
            op: op.to_owned(),
            transactional: op == "TransactWriteItems",
            touches: out,
        }
    }

    /// After the answer: prices the call and adds it to the ledger.
    pub async fn after(
        &self,
        headers: &HeaderMap,
        pending: Pending,
        body: &Value,
        status: u16,
        answer: &[u8],
        ms: u64,
    ) {
        let mut usage = Usage {
            ms,
            ..Default::default()
        };
        *usage.calls.entry(pending.op.clone()).or_default() += 1;
        let ok = status == 200;
        if WRITES.contains(&pending.op.as_str()) {
            usage.write_requests = 1;
            let factor = if pending.transactional { 2.0 } else { 1.0 };
            for t in &pending.touches {
                let after = match t.kind {
                    Kind::Put => t.put.clone(),
                    Kind::Update if ok => self.get(headers, &t.table, &t.key).await,
                    Kind::Update => t.before.clone(),
                    Kind::Delete => None,
                    Kind::Check => t.before.clone(),
                };
                let units = if t.kind == Kind::Check {
                    capacity::item_write_units(t.before.as_ref(), None)
                } else {
                    capacity::item_write_units(t.before.as_ref(), after.as_ref())
                };
                usage.wru += factor * units;
                if ok && t.kind != Kind::Check {
                    let shape = self.table(headers, &t.table).await;
                    usage.index_wru += shape.index_write_units(t.before.as_ref(), after.as_ref());
                }
            }
        } else {
            usage.read_requests = u64::from(matches!(
                pending.op.as_str(),
                "GetItem" | "BatchGetItem" | "Query" | "Scan" | "TransactGetItems"
            ));
            usage.rru = self.read_units(headers, &pending.op, body, answer).await;
        }
        let mut ledger = self.ledger.lock().unwrap();
        ledger.entry(pending.function).or_default().add(&usage);
    }

    async fn read_units(&self, headers: &HeaderMap, op: &str, body: &Value, answer: &[u8]) -> f64 {
        let consistent = body["ConsistentRead"].as_bool().unwrap_or(false);
        let answer: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
        let size = |i: &Value| i.as_object().map_or(0, capacity::item_size);
        match op {
            "GetItem" => {
                let item = if body.get("ProjectionExpression").is_some() {
                    let key = body["Key"].as_object().cloned().unwrap_or_default();
                    self.get(
                        headers,
                        body["TableName"].as_str().unwrap_or_default(),
                        &key,
                    )
                    .await
                    .map(Value::Object)
                    .unwrap_or(Value::Null)
                } else {
                    answer["Item"].clone()
                };
                capacity::read_units(size(&item), consistent)
            }
            "BatchGetItem" => {
                let mut units = 0.0;
                for (table, request) in body["RequestItems"].as_object().into_iter().flatten() {
                    let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
                    for key in request["Keys"].as_array().into_iter().flatten() {
                        let key = key.as_object().cloned().unwrap_or_default();
                        let item = self.get(headers, table, &key).await;
                        units += capacity::read_units(
                            item.as_ref().map_or(0, capacity::item_size),
                            consistent,
                        );
                    }
                }
                units
            }
            "TransactGetItems" => {
                let mut units = 0.0;
                for t in body["TransactItems"].as_array().into_iter().flatten() {
                    let g = &t["Get"];
                    let key = g["Key"].as_object().cloned().unwrap_or_default();
                    let item = self
                        .get(headers, g["TableName"].as_str().unwrap_or_default(), &key)
                        .await;
                    units += 2.0
                        * capacity::read_units(item.as_ref().map_or(0, capacity::item_size), true);
                }
                units
            }
            "Query" | "Scan" => {
                // Capacity counts every item read before a filter, at its full size: ask again
                // without the filter and projection when the call had them.
                let narrowed = ["FilterExpression", "ProjectionExpression", "Select"]
                    .iter()
                    .any(|k| body.get(*k).is_some());
                let items = if narrowed {
                    let full = strip_narrowing(body);
                    self.call(headers, op, &full)
                        .await
                        .map(|r| r["Items"].clone())
                        .unwrap_or(Value::Null)
                } else {
                    answer["Items"].clone()
                };
                let total: usize = items.as_array().into_iter().flatten().map(size).sum();
                capacity::read_units(total, consistent)
            }
            _ => 0.0,
        }
    }
}

/// A Query or Scan without its filter, projection and `Select`, keeping only the expression names
/// and values the key condition still uses (DynamoDB refuses unused ones).
fn strip_narrowing(body: &Value) -> Value {
    let mut full = body.clone();
    let Some(m) = full.as_object_mut() else {
        return full;
    };
    for k in ["FilterExpression", "ProjectionExpression", "Select"] {
        m.remove(k);
    }
    let used = m
        .get("KeyConditionExpression")
        .and_then(Value::as_str)
        .map(placeholders)
        .unwrap_or_default();
    for field in ["ExpressionAttributeNames", "ExpressionAttributeValues"] {
        if let Some(Value::Object(map)) = m.get_mut(field) {
            map.retain(|k, _| used.contains(k));
            if map.is_empty() {
                m.remove(field);
            }
        }
    }
    full
}

/// `#name` and `:value` placeholders in an expression.
fn placeholders(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for c in expr.chars().chain(std::iter::once(' ')) {
        match (&mut current, c) {
            (Some(p), c) if c.is_ascii_alphanumeric() || c == '_' => p.push(c),
            (cur, c) => {
                if let Some(p) = cur.take() {
                    out.push(p);
                }
                if c == '#' || c == ':' {
                    current = Some(c.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_is_stripped_with_unused_placeholders() {
        let q = json!({
            "TableName": "t",
            "KeyConditionExpression": "#pk = :pk AND #sk > :v",
            "FilterExpression": "#st = :st",
            "ProjectionExpression": "#a",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk", "#st": "status", "#a": "a"},
            "ExpressionAttributeValues": {":pk": {"S": "x"}, ":v": {"N": "1"}, ":st": {"S": "ok"}},
            "Limit": 5
        });
        let s = strip_narrowing(&q);
        assert_eq!(
            s["ExpressionAttributeNames"],
            json!({"#pk": "pk", "#sk": "sk"})
        );
        assert_eq!(
            s["ExpressionAttributeValues"],
            json!({":pk": {"S": "x"}, ":v": {"N": "1"}})
        );
        assert!(s.get("FilterExpression").is_none() && s.get("ProjectionExpression").is_none());
        assert_eq!(s["Limit"], 5);
    }

    #[test]
    fn callers_are_named_by_their_app_name() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-user-agent",
            "aws-sdk-rust/1.3 api/dynamodb/1.0 app/WorkerFunction"
                .parse()
                .unwrap(),
        );
        assert_eq!(Meter::function(&h), "WorkerFunction");
        assert_eq!(Meter::function(&HeaderMap::new()), "other");
    }
}
