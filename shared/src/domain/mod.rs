//! The domain: workflow definitions and their validation, execution events, `evolve` and `plan`.
//! Pure: no I/O, no async, no clock, no randomness, no AWS types.

pub mod definition;
pub mod execution;
pub mod expr;
pub mod schema;
pub mod secret_ref;
pub mod validate;

pub use definition::Definition;
pub use validate::{validate, validate_input, Problem};
