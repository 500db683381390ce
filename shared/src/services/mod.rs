//! The API's operations, once for every face: the REST functions and the GraphQL subgraph call
//! these, so a rule (a check, a refusal, its wording) is written in one place. Each takes the
//! caller's verified claims and answers with the same problem type the REST faces render.

pub mod executions;
pub mod mcp;
pub mod usage;
pub mod users;
pub mod workflows;
