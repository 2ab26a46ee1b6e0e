//! The calls REST API and what it keeps: the spec's shapes and refusals, the store across
//! SIGKILLs and races, webhooks, the demo sign-in, and revocation. One test binary; each module
//! was a binary of its own.

#[path = "../common/mod.rs"]
mod common;

mod calls_api;
mod calls_durability;
mod calls_limits;
mod demo_api;
mod revocation;
mod webhooks;
