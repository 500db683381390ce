//! DynamoDB's on-demand capacity rules, applied to what the counting proxy sees: item sizes by
//! AWS's formula, request units with its rounding (1 KB writes, 4 KB reads, eventual reads at half,
//! transactions at twice), and global secondary index writes by projection. Pure: the proxy
//! supplies the items (before and after each write, as read from the store).

use serde_json::{Map, Value};

/// An item in DynamoDB's JSON wire form (`{"name": {"S": "..."}}`).
pub type Item = Map<String, Value>;

/// Size in bytes of one attribute value, as DynamoDB counts it.
pub fn value_size(value: &Value) -> usize {
    let Some((kind, v)) = value.as_object().and_then(|m| m.iter().next()) else {
        return 0;
    };
    match kind.as_str() {
        "S" => v.as_str().map_or(0, str::len),
        "N" => v.as_str().map_or(1, number_size),
        "B" => v.as_str().map_or(0, base64_len),
        "BOOL" | "NULL" => 1,
        "SS" => strings(v).map(str::len).sum(),
        "NS" => strings(v).map(number_size).sum(),
        "BS" => strings(v).map(base64_len).sum(),
        // 3 bytes for the container and 1 per element.
        "L" => {
            3 + v
                .as_array()
                .map_or(0, |l| l.iter().map(|e| 1 + value_size(e)).sum())
        }
        "M" => {
            3 + v.as_object().map_or(0, |m| {
                m.iter().map(|(k, e)| 1 + k.len() + value_size(e)).sum()
            })
        }
        _ => 0,
    }
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// A number: 1 byte per two significant digits, plus 1.
fn number_size(n: &str) -> usize {
    let digits: String = n
        .trim_start_matches('-')
        .split(['e', 'E'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

fn base64_len(s: &str) -> usize {
    let padding = s.bytes().rev().take_while(|b| *b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(padding)
}

/// Size in bytes of an item: each attribute's name and value.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write request units for one standard write of an item of `bytes` (1 KB each, at least 1).
pub fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// Read request units for `bytes` read by one request (4 KB each, at least 1; half when eventually
/// consistent).
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

/// What an index copies from the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    All,
    KeysOnly,
    Include(Vec<String>),
}

/// A global secondary index: its key attributes and projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub name: String,
    pub key: Vec<String>,
    pub projection: Projection,
}

/// A table's key attributes and global secondary indexes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub key: Vec<String>,
    pub indexes: Vec<Index>,
}

impl Table {
    /// From a `DescribeTable` answer (JSON).
    pub fn from_description(description: &Value) -> Self {
        let t = &description["Table"];
        let keys = |schema: &Value| -> Vec<String> {
            schema
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k["AttributeName"].as_str().map(str::to_owned))
                .collect()
        };
        let indexes = t["GlobalSecondaryIndexes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| Index {
                name: g["IndexName"].as_str().unwrap_or_default().to_owned(),
                key: keys(&g["KeySchema"]),
                projection: match g["Projection"]["ProjectionType"].as_str() {
                    Some("KEYS_ONLY") => Projection::KeysOnly,
                    Some("INCLUDE") => Projection::Include(
                        strings(&g["Projection"]["NonKeyAttributes"])
                            .map(str::to_owned)
                            .collect(),
                    ),
                    _ => Projection::All,
                },
            })
            .collect();
        Self {
            key: keys(&t["KeySchema"]),
            indexes,
        }
    }

    /// The primary key of `item`.
    pub fn key_of(&self, item: &Item) -> Item {
        self.key
            .iter()
            .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }

    /// The entry `index` holds for `item` (none when the item lacks an index key attribute).
    fn entry(&self, index: &Index, item: &Item) -> Option<Item> {
        if !index.key.iter().all(|k| item.contains_key(k)) {
            return None;
        }
        let keep = |name: &String| {
            self.key.contains(name)
                || index.key.contains(name)
                || match &index.projection {
                    Projection::All => true,
                    Projection::KeysOnly => false,
                    Projection::Include(names) => names.contains(name),
                }
        };
        Some(
            item.iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Write units the table's indexes consume when an item goes from `old` to `new` (a delete has
    /// no `new`). Index writes are standard writes even inside a transaction; an entry's size is its
    /// attributes plus 100 bytes. An entry whose key changes is a delete and a put; one whose
    /// projected attributes do not change costs nothing.
    pub fn index_write_units(&self, old: Option<&Item>, new: Option<&Item>) -> f64 {
        let size = |e: &Item| item_size(e) + 100;
        self.indexes
            .iter()
            .map(|index| {
                let before = old.and_then(|i| self.entry(index, i));
                let after = new.and_then(|i| self.entry(index, i));
                match (before, after) {
                    (None, None) => 0.0,
                    (None, Some(a)) => write_units(size(&a)),
                    (Some(b), None) => write_units(size(&b)),
                    (Some(b), Some(a)) if b == a => 0.0,
                    (Some(b), Some(a)) => {
                        let same_key = index.key.iter().all(|k| b.get(k) == a.get(k));
                        if same_key {
                            write_units(size(&b).max(size(&a)))
                        } else {
                            write_units(size(&b)) + write_units(size(&a))
                        }
                    }
                }
            })
            .sum()
    }
}

/// Units for one write of an item that was `old` and became `new`: the larger of the two sizes.
pub fn item_write_units(old: Option<&Item>, new: Option<&Item>) -> f64 {
    let size = |i: Option<&Item>| i.map_or(0, item_size);
    write_units(size(old).max(size(new)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(v: Value) -> Item {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sizes_follow_the_documented_formula() {
        // Name 4 + "hello" 5.
        assert_eq!(item_size(&item(json!({"name": {"S": "hello"}}))), 9);
        // 123456 has 6 significant digits: 3 + 1.
        assert_eq!(value_size(&json!({"N": "123456"})), 4);
        assert_eq!(value_size(&json!({"N": "1000"})), 2);
        assert_eq!(value_size(&json!({"N": "-0.5"})), 2);
        assert_eq!(value_size(&json!({"BOOL": true})), 1);
        // Map: 3 + (1 + "a" + 1 + 1) + ... = 3 + 1 + 1 + 2 (N 7 is 1 digit: 2 bytes).
        assert_eq!(value_size(&json!({"M": {"a": {"N": "7"}}})), 7);
        assert_eq!(
            value_size(&json!({"L": [{"S": "xy"}, {"NULL": true}]})),
            3 + 3 + 2
        );
        assert_eq!(value_size(&json!({"B": "aGVsbG8="})), 5);
        assert_eq!(value_size(&json!({"SS": ["a", "bc"]})), 3);
    }

    #[test]
    fn units_round_like_dynamodb() {
        assert_eq!(write_units(0), 1.0);
        assert_eq!(write_units(1024), 1.0);
        assert_eq!(write_units(1025), 2.0);
        assert_eq!(read_units(4096, true), 1.0);
        assert_eq!(read_units(4097, true), 2.0);
        assert_eq!(read_units(10, false), 0.5);
    }

    #[test]
    fn index_writes_depend_on_projection_and_key_changes() {
        let table = Table::from_description(&json!({"Table": {
        "KeySchema": [{"AttributeName": "pk"}, {"AttributeName": "sk"}],
        "GlobalSecondaryIndexes": [
            {"IndexName": "all", "KeySchema": [{"AttributeName": "g"}], "Projection": {"ProjectionType": "ALL"}},
            {"IndexName": "keys", "KeySchema": [{"AttributeName": "g"}], "Projection": {"ProjectionType": "KEYS_ONLY"}},
            {"IndexName": "some", "KeySchema": [{"AttributeName": "h"}], "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status"]}}
        ]}}));
        let a = item(
            json!({"pk": {"S": "p"}, "sk": {"S": "s"}, "g": {"S": "1"}, "status": {"S": "running"}, "big": {"S": "x".repeat(1500)}}),
        );
        // A new item lands in "all" (2 KB with the big attribute) and "keys" (1); not in "some".
        assert_eq!(table.index_write_units(None, Some(&a)), 2.0 + 1.0);
        // Changing only a non-key attribute outside any projection but ALL: only "all" writes.
        let mut b = a.clone();
        b.insert("big".into(), json!({"S": "y".repeat(1500)}));
        assert_eq!(table.index_write_units(Some(&a), Some(&b)), 2.0);
        // Changing the index key: a delete and a put in both indexes keyed on it.
        let mut c = a.clone();
        c.insert("g".into(), json!({"S": "2"}));
        assert_eq!(table.index_write_units(Some(&a), Some(&c)), 4.0 + 2.0);
        // A delete removes its entries.
        assert_eq!(table.index_write_units(Some(&a), None), 3.0);
        assert_eq!(item_write_units(Some(&a), None), 2.0);
    }
}
