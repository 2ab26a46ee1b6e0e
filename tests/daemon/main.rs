//! The daemon as an operator meets it: `check-config`, HTTP limits and CORS, logs, metrics,
//! the service manager protocol, and schemathesis against `/openapi.json`. One test binary; each
//! module was a binary of its own.

#[path = "../common/mod.rs"]
mod common;

mod check_config;
mod cors;
mod http_limits;
mod logging;
mod metrics;
mod openapi_fuzz;
mod service_manager;
