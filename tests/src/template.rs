//! Reads `infra/template.yaml` and resolves the intrinsics it uses (`!Ref`, `!Sub`, `!GetAtt` of a
//! table's name) for one stack name, so local tables and function environments come from the
//! same file CloudFormation deploys.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value as Json};
use serde_norway::Value as Yaml;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("template: {0}")]
    Invalid(String),
}

/// A parsed template, resolved for one stack name.
#[derive(Debug, Clone)]
pub struct Template {
    stack: String,
    parameters: BTreeMap<String, String>,
    resources: Map<String, Json>,
    globals: Json,
    /// Physical ids known only after creation (e.g. a secret's ARN), by logical id.
    physical: BTreeMap<String, String>,
}

/// Where the template lives, relative to the workspace root.
pub const TEMPLATE_PATH: &str = "infra/template.yaml";

impl Template {
    pub fn load(path: &Path, stack: &str) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, stack)
    }

    /// The workspace's own template (found from this crate's manifest directory).
    pub fn workspace(stack: &str) -> Result<Self, TemplateError> {
        Self::load(&crate::workspace_root().join(TEMPLATE_PATH), stack)
    }

    pub fn parse(text: &str, stack: &str) -> Result<Self, TemplateError> {
        let doc: Yaml =
            serde_norway::from_str(text).map_err(|e| TemplateError::Invalid(e.to_string()))?;
        let doc = to_json(doc);
        let parameters = doc
            .get("Parameters")
            .and_then(Json::as_object)
            .map(|ps| {
                ps.iter()
                    .filter_map(|(k, v)| Some((k.clone(), scalar(v.get("Default")?)?)))
                    .collect()
            })
            .unwrap_or_default();
        let resources = doc
            .get("Resources")
            .and_then(Json::as_object)
            .cloned()
            .ok_or_else(|| TemplateError::Invalid("no Resources".into()))?;
        let globals = doc
            .pointer("/Globals/Function")
            .cloned()
            .unwrap_or(Json::Null);
        Ok(Self {
            stack: stack.to_owned(),
            parameters,
            resources,
            globals,
            physical: BTreeMap::new(),
        })
    }

    /// Records what `!Ref <id>` resolves to once the resource exists.
    pub fn set_physical(&mut self, id: &str, value: String) {
        self.physical.insert(id.to_owned(), value);
    }

    /// Sets one property of a resource (a test's variant of the template, e.g. a shorter
    /// `Timeout`).
    pub fn set_property(&mut self, id: &str, key: &str, value: Json) {
        let props = self
            .resources
            .get_mut(id)
            .and_then(|r| r.get_mut("Properties"))
            .and_then(Json::as_object_mut)
            .unwrap_or_else(|| panic!("the template has no resource {id} with Properties"));
        props.insert(key.to_owned(), value);
    }

    /// Logical ids of every resource of `kind` (e.g. `AWS::SecretsManager::Secret`), sorted.
    pub fn resource_ids(&self, kind: &str) -> Vec<String> {
        self.resources
            .keys()
            .filter(|id| self.resource_type(id) == Some(kind))
            .cloned()
            .collect()
    }

    /// A resource's properties with every intrinsic resolved.
    pub fn properties(&self, id: &str) -> Result<Json, TemplateError> {
        let props = self
            .resources
            .get(id)
            .and_then(|r| r.get("Properties"))
            .ok_or_else(|| TemplateError::Invalid(format!("{id} has no Properties")))?;
        self.resolve(props)
    }

    /// A function's `Events`, unresolved (intrinsics kept in long form, e.g. `Fn::GetAtt`).
    pub fn raw_events(&self, function: &str) -> Option<&Map<String, Json>> {
        self.resources
            .get(function)?
            .pointer("/Properties/Events")?
            .as_object()
    }

    /// Every HTTP route of a function: (method, path) from its `HttpApi` events.
    pub fn http_routes(&self, function: &str) -> Vec<(String, String)> {
        let mut routes: Vec<(String, String)> = self
            .resources
            .get(function)
            .and_then(|r| r.pointer("/Properties/Events"))
            .and_then(Json::as_object)
            .into_iter()
            .flat_map(|events| events.values())
            .filter(|e| e.get("Type").and_then(Json::as_str) == Some("HttpApi"))
            .filter_map(|e| {
                let p = e.get("Properties")?;
                Some((
                    p.get("Method")?.as_str()?.to_uppercase(),
                    p.get("Path")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        routes.sort();
        routes
    }

    /// Functions with HTTP routes, sorted.
    pub fn http_functions(&self) -> Vec<String> {
        self.resource_ids("AWS::Serverless::Function")
            .into_iter()
            .filter(|f| !self.http_routes(f).is_empty())
            .collect()
    }

    /// `rate(N unit)` schedules of a function's `Schedule` events, as periods.
    pub fn schedules(&self, function: &str) -> Result<Vec<std::time::Duration>, TemplateError> {
        let Some(Json::Object(events)) = self.properties(function)?.pointer("/Events").cloned()
        else {
            return Ok(Vec::new());
        };
        events
            .values()
            .filter(|e| e.get("Type").and_then(Json::as_str) == Some("Schedule"))
            .map(|e| {
                let expr = e
                    .pointer("/Properties/Schedule")
                    .and_then(Json::as_str)
                    .unwrap_or_default();
                parse_rate(expr).ok_or_else(|| {
                    TemplateError::Invalid(format!(
                        "unsupported schedule {expr:?} (use rate(N unit))"
                    ))
                })
            })
            .collect()
    }

    pub fn stack(&self) -> &str {
        &self.stack
    }

    fn resource_type(&self, id: &str) -> Option<&str> {
        self.resources.get(id)?.get("Type")?.as_str()
    }

    /// Logical ids of every `AWS::DynamoDB::Table`, sorted.
    pub fn table_ids(&self) -> Vec<String> {
        self.resources
            .keys()
            .filter(|id| self.resource_type(id) == Some("AWS::DynamoDB::Table"))
            .cloned()
            .collect()
    }

    /// The physical name `!Ref Table` gives.
    pub fn table_name(&self, id: &str) -> Result<String, TemplateError> {
        self.properties(id)?
            .get("TableName")
            .and_then(Json::as_str)
            .map(str::to_owned)
            .ok_or_else(|| TemplateError::Invalid(format!("table {id} has no TableName")))
    }

    /// `Globals.Function.Timeout`, in seconds.
    pub fn global_timeout(&self) -> Option<u64> {
        self.globals.get("Timeout").and_then(Json::as_u64)
    }

    /// `Globals.Function.MemorySize`, in MB.
    pub fn global_memory(&self) -> Option<u64> {
        self.globals.get("MemorySize").and_then(Json::as_u64)
    }

    /// A function's `MemorySize` (its own, else Globals', else Lambda's default 128), in MB.
    pub fn function_memory(&self, id: &str) -> u64 {
        self.properties(id)
            .ok()
            .and_then(|p| p["MemorySize"].as_u64())
            .or_else(|| self.global_memory())
            .unwrap_or(128)
    }

    /// The binary a function runs (`Metadata.BinaryName`, else its `CodeUri` crate).
    pub fn function_binary(&self, id: &str) -> Option<String> {
        let resource = self.resources.get(id)?;
        resource
            .pointer("/Metadata/BuildProperties/Binary")
            .or_else(|| resource.pointer("/Metadata/BinaryName"))
            .and_then(Json::as_str)
            .map(str::to_owned)
    }

    /// The environment a function gets: Globals first, then its own variables, all resolved.
    pub fn function_env(&self, id: &str) -> Result<BTreeMap<String, String>, TemplateError> {
        let mut env = BTreeMap::new();
        let own = self
            .resources
            .get(id)
            .and_then(|r| r.pointer("/Properties/Environment/Variables"))
            .cloned();
        for vars in [self.globals.pointer("/Environment/Variables").cloned(), own]
            .into_iter()
            .flatten()
        {
            if let Json::Object(vars) = self.resolve(&vars)? {
                for (k, v) in vars {
                    env.insert(k, scalar(&v).unwrap_or_default());
                }
            }
        }
        Ok(env)
    }

    /// The shared table settings every function gets (from Globals).
    pub fn tables(&self) -> Result<shared::config::Tables, TemplateError> {
        let env = self.function_env("")?;
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .ok_or_else(|| TemplateError::Invalid(format!("Globals set no {k}")))
        };
        Ok(shared::config::Tables {
            events: get("EVENTS_TABLE")?,
            state: get("STATE_TABLE")?,
            migrations: get("MIGRATIONS_TABLE")?,
        })
    }

    fn sub(&self, text: &str) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| TemplateError::Invalid(format!("unclosed ${{ in {text:?}")))?;
            let name = &rest[start + 2..start + end];
            out.push_str(&self.reference(name)?);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn reference(&self, name: &str) -> Result<String, TemplateError> {
        match name {
            "AWS::StackName" => Ok(self.stack.clone()),
            "AWS::Region" => Ok(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into())),
            "AWS::AccountId" => Ok("123456789012".into()),
            "AWS::StackId" => Ok(format!(
                "arn:aws:cloudformation:us-east-1:123456789012:stack/{}/local",
                self.stack
            )),
            _ if self.physical.contains_key(name) => Ok(self.physical[name].clone()),
            _ if self.parameters.contains_key(name) => Ok(self.parameters[name].clone()),
            _ if self.resource_type(name) == Some("AWS::DynamoDB::Table") => self.table_name(name),
            _ if self.resources.contains_key(name) => Ok(format!("{}-{name}", self.stack)),
            _ => Err(TemplateError::Invalid(format!(
                "unresolvable reference {name}"
            ))),
        }
    }

    fn resolve(&self, value: &Json) -> Result<Json, TemplateError> {
        Ok(match value {
            Json::Object(map) if map.len() == 1 && map.contains_key("Ref") => {
                Json::String(self.reference(map["Ref"].as_str().unwrap_or_default())?)
            }
            Json::Object(map) if map.len() == 1 && map.contains_key("Fn::Sub") => {
                Json::String(self.sub(map["Fn::Sub"].as_str().unwrap_or_default())?)
            }
            Json::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            Json::Array(items) => Json::Array(
                items
                    .iter()
                    .map(|v| self.resolve(v))
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }
}

fn parse_rate(expr: &str) -> Option<std::time::Duration> {
    let inner = expr.strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(n * secs))
}

fn scalar(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// YAML to JSON, turning short-form tags (`!Ref X`) into their long form (`{"Ref": "X"}`).
fn to_json(value: Yaml) -> Json {
    match value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(b),
        Yaml::Number(n) => serde_json::to_value(&n).unwrap_or(Json::Null),
        Yaml::String(s) => Json::String(s),
        Yaml::Sequence(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Yaml::Mapping(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s,
                        other => serde_norway::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let key = if name == "Ref" {
                "Ref".to_owned()
            } else {
                format!("Fn::{name}")
            };
            let mut map = Map::new();
            map.insert(key, to_json(tagged.value));
            Json::Object(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_template_resolves_tables_and_env() {
        let t = Template::workspace("stack-x").unwrap();
        assert_eq!(
            t.table_ids(),
            ["EventsTable", "MigrationsTable", "StateTable"]
        );
        assert_eq!(t.table_name("EventsTable").unwrap(), "stack-x-events");
        let tables = t.tables().unwrap();
        assert_eq!(tables.state, "stack-x-state");
        assert_eq!(tables.migrations, "stack-x-migrations");
        assert_eq!(
            t.http_functions(),
            [
                "AuthFunction",
                "ExecutionsFunction",
                "GraphqlFunction",
                "HealthFunction",
                "McpFunction",
                "SecretsFunction",
                "UsageFunction",
                "WorkflowsFunction"
            ]
        );
        assert_eq!(
            t.schedules("TimerFunction").unwrap(),
            [std::time::Duration::from_secs(60)]
        );
        let worker = t.function_env("WorkerFunction").unwrap();
        assert_eq!(worker["HTTP_ALLOW_PRIVATE_NETWORKS"], "false");
        assert_eq!(worker["STATE_TABLE"], "stack-x-state");
        assert!(t
            .http_routes("AuthFunction")
            .contains(&("POST".into(), "/auth/login".into())));
        assert_eq!(
            t.schedules("MigratorFunction").unwrap(),
            [std::time::Duration::from_secs(3600)]
        );
        let env = t.function_env("MigratorFunction").unwrap();
        assert_eq!(env["RUST_LOG"], "info");
        assert_eq!(env["EVENTS_TABLE"], "stack-x-events");
    }
}
