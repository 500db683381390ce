//! Authentication: access tokens (JWT), refresh-token families with reuse detection, password
//! hashing, the user store, and the key material (Secrets Manager or `JWT_SECRET`).

mod hs256;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod sessions;
pub mod store;

pub use jwt::{Claims, JwtKeys, TokenError};
pub use sessions::Sessions;
pub use store::{user_ref, AuthStore, User};
