//! `Long`: a 64-bit integer as a JSON number. GraphQL's `Int` is 32-bit signed, and gateways
//! built on graphql-js refuse larger values; token counts, durations in milliseconds and
//! event versions outgrow it.

use async_graphql::{InputValueError, InputValueResult, Number, Scalar, ScalarType, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Long(pub i64);

/// A 64-bit signed integer, sent as a JSON number (exact up to 2^53 in JavaScript clients).
#[Scalar(name = "Long")]
impl ScalarType for Long {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Long(i)),
                None => Err(InputValueError::custom(
                    "a Long is a whole number within 64 bits",
                )),
            },
            Value::String(s) => s
                .parse()
                .map(Long)
                .map_err(|_| InputValueError::custom("a Long is a whole number within 64 bits")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(Number::from(self.0))
    }
}

impl From<u64> for Long {
    fn from(v: u64) -> Self {
        Long(v.min(i64::MAX as u64) as i64)
    }
}

impl From<i64> for Long {
    fn from(v: i64) -> Self {
        Long(v)
    }
}

impl From<usize> for Long {
    fn from(v: usize) -> Self {
        Long(v.min(i64::MAX as usize) as i64)
    }
}
