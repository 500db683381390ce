//! The smallest useful HTTP function: the same runtime crates as ours (lambda_http on a
//! multi-threaded tokio), no configuration, no clients. `scripts/bench coldstart` measures every
//! function's init time and memory against this one, built in the same run with the same profile.

use lambda_http::{service_fn, Body, Error, Request, Response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_request: Request| async {
        Ok::<_, Error>(Response::new(Body::from("hello")))
    }))
    .await
}
