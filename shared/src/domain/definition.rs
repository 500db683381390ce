//! The workflow definition: a graph of steps kept as data (JSON, or YAML that maps to the same
//! JSON). Parsing only checks shapes; [`super::validate`] checks the graph and the templates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A workflow as its author writes it. `version` is assigned by the API; `id` may be given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// JSON Schema the execution input must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// The first step of the top-level graph.
    pub start: String,
    /// Every step, keyed by a name unique in the whole workflow (branches and map iterators too).
    pub steps: BTreeMap<String, Step>,
    /// The execution's output: a JSON value whose strings are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
    /// The most one execution may spend on `llm` steps; a call that might pass it fails with
    /// `BudgetExceeded` before the provider is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<ExecutionBudget>,
    /// Roles whose members may decide this workflow's approvals (default `approver`); `admin`
    /// always may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
}

/// Who decides approvals when a workflow does not say.
pub const DEFAULT_APPROVERS: &[&str] = &["approver"];

impl Definition {
    /// Whether a caller with `roles` may approve or reject this workflow's approval steps.
    pub fn may_approve(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| r == "admin")
            || match &self.approvers {
                Some(allowed) => roles.iter().any(|r| allowed.contains(r)),
                None => roles
                    .iter()
                    .any(|r| DEFAULT_APPROVERS.contains(&r.as_str())),
            }
    }

    /// The roles that may approve, for messages.
    pub fn approver_roles(&self) -> Vec<String> {
        self.approvers
            .clone()
            .unwrap_or_else(|| DEFAULT_APPROVERS.iter().map(|r| (*r).to_owned()).collect())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

/// A step: what it does, where it goes next, and how it fails. (Unknown fields are refused by the
/// step kind, which sees every field `Step` itself does not take.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    #[serde(flatten)]
    pub kind: StepKind,
    /// The step that follows; none ends the enclosing graph (workflow, branch or iteration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// How long one attempt may take before it fails with `Timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Fallbacks, tried in order, for an error the retries did not fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepKind {
    /// Renders text, or a JSON value whose strings are templates.
    Template {
        template: Value,
    },
    /// Builds a JSON value whose string leaves are expressions (`steps.fetch.output.items | length`).
    Transform {
        mapping: Value,
    },
    /// The first branch whose expression is true wins; otherwise `default`.
    Condition {
        branches: Vec<ConditionBranch>,
        default: String,
    },
    /// Runs every branch graph; joins when all (or any one) of them end.
    Parallel {
        branches: Vec<Graph>,
        #[serde(default)]
        join: Join,
    },
    /// Runs `iterator` once per item of the `items` expression, at most `concurrency` at a time;
    /// its output is the iterations' outputs in item order.
    Map {
        items: String,
        #[serde(default = "default_concurrency")]
        concurrency: u32,
        iterator: Graph,
    },
    /// Pauses for `seconds`, or until the RFC 3339 time the `until` template renders.
    Wait {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
    },
    /// Pauses until approved or rejected through the API, or fails after `timeout_seconds`.
    Approval {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
    },
    Http {
        #[serde(default = "default_method")]
        method: String,
        url: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
    },
    /// Runs another workflow as a child execution and takes its output.
    Subworkflow {
        workflow_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
    },
    Succeed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
    },
    Fail {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    Llm(LlmStep),
    /// Calls `tool` on an MCP server the tenant registered under `server`.
    Mcp {
        server: String,
        tool: String,
        /// The tool's arguments: an object whose strings are templates.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments: Option<Value>,
    },
}

/// An LLM call. Validated now; its executor arrives with the AI providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmStep {
    pub provider: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

pub const LLM_PROVIDERS: [&str; 3] = ["bedrock", "openai", "anthropic"];

fn default_concurrency() -> u32 {
    10
}

fn default_method() -> String {
    "GET".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionBranch {
    /// An expression over the context, e.g. `input.score >= 0.5`.
    pub when: String,
    pub next: String,
}

/// A nested graph (a parallel branch or a map iterator): its first step. Its steps live in the
/// workflow's one `steps` map and may only lead to steps of the same graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    pub start: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Join {
    #[default]
    All,
    Any,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(default = "default_initial_interval")]
    pub initial_interval_ms: u64,
    #[serde(default = "default_backoff_rate")]
    pub backoff_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval_ms: Option<u64>,
    /// Spread each delay over [delay/2, delay] so retries of many executions do not align.
    #[serde(default)]
    pub jitter: bool,
    /// Error kinds worth retrying; empty means every retryable kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

fn default_initial_interval() -> u64 {
    1000
}

fn default_backoff_rate() -> f64 {
    2.0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catch {
    /// Error kinds this fallback handles; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub next: String,
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Template { .. } => "template",
            Self::Transform { .. } => "transform",
            Self::Condition { .. } => "condition",
            Self::Parallel { .. } => "parallel",
            Self::Map { .. } => "map",
            Self::Wait { .. } => "wait",
            Self::Approval { .. } => "approval",
            Self::Http { .. } => "http",
            Self::Subworkflow { .. } => "subworkflow",
            Self::Succeed { .. } => "succeed",
            Self::Fail { .. } => "fail",
            Self::Llm(_) => "llm",
            Self::Mcp { .. } => "mcp",
        }
    }

    /// Steps that the step worker performs (side effects); the rest the orchestrator evaluates.
    pub fn is_task(&self) -> bool {
        matches!(
            self,
            Self::Http { .. } | Self::Subworkflow { .. } | Self::Llm(_) | Self::Mcp { .. }
        )
    }

    /// The steps this one leads to besides `next` and `catch`.
    pub fn targets(&self) -> Vec<&str> {
        match self {
            Self::Condition { branches, default } => branches
                .iter()
                .map(|b| b.next.as_str())
                .chain([default.as_str()])
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The nested graphs this step runs.
    pub fn graphs(&self) -> Vec<&Graph> {
        match self {
            Self::Parallel { branches, .. } => branches.iter().collect(),
            Self::Map { iterator, .. } => vec![iterator],
            _ => Vec::new(),
        }
    }
}

/// Why a definition could not even be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct ParseError {
    pub pointer: String,
    pub message: String,
}

impl Definition {
    /// Reads a definition from JSON, or from YAML when it is not JSON (`content_type` decides when
    /// given). Errors carry the JSON pointer of the offending field.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Self, ParseError> {
        let yaml = content_type.is_some_and(|c| c.contains("yaml"));
        let value: Value = if yaml {
            serde_norway::from_slice(body).map_err(|e| ParseError {
                pointer: String::new(),
                message: format!("not valid YAML: {e}"),
            })?
        } else {
            serde_json::from_slice(body).map_err(|e| ParseError {
                pointer: String::new(),
                message: format!("not valid JSON: {e}"),
            })?
        };
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        serde_path_to_error::deserialize(value).map_err(|e| ParseError {
            pointer: pointer_of(e.path()),
            message: e.inner().to_string(),
        })
    }

    /// Every reason `value` does not read as a definition, not only the first: each step is
    /// read on its own (an unknown step type in one does not hide a bad field in another), then
    /// the rest of the document.
    pub fn parse_problems(value: &Value) -> Vec<ParseError> {
        let mut problems = Vec::new();
        let mut rest = value.clone();
        if let Some(Value::Object(steps)) = value.get("steps") {
            for (id, step) in steps {
                if let Err(e) = serde_path_to_error::deserialize::<_, Step>(step.clone()) {
                    problems.push(ParseError {
                        pointer: format!("/steps/{}{}", escape(id), pointer_of(e.path())),
                        message: e.inner().to_string(),
                    });
                }
            }
            rest["steps"] = Value::Object(Map::new());
        }
        if let Err(e) = Self::from_value(rest) {
            problems.push(e);
        }
        if problems.is_empty() {
            // Whatever failed only fails in the whole (it should not happen; say it anyway).
            problems.extend(Self::from_value(value.clone()).err());
        }
        problems
    }

    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}

/// serde_path_to_error's `a.b[0].c` as a JSON pointer `/a/b/0/c`.
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(escape(key)),
            Segment::Enum { variant } => Some(escape(variant)),
            Segment::Unknown => None,
        })
        .fold(String::new(), |acc, s| acc + "/" + &s)
}

/// RFC 6901 escaping of one pointer segment.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
