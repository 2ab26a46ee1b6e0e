//! switchboard-signaling: the call domain.
//!
//! - [`call`]: the call state machine, pure: transitions take the time and return [`event`]s.
//! - [`store`]: the SQLite call store (`schema.sql`), on its own thread.
//! - [`service`]: the call operations the REST API (and the hub) perform: load, transition,
//!   commit, deliver.
//! - [`auth`]: the bearer JWTs of users and the admin token; [`revoke`]: the revocations in
//!   force, which it checks tokens against.
//! - [`api`]: the REST API on axum (`/api/calls`, `/api/admin`, `/openapi.json`).
//! - [`hub`]: the signaling hub: sockets, live-call rosters, every delivery.
//! - [`domain`]: the hub and the call service wired together at construction, with the
//!   background tasks between them ([`Domain::open`]).
//! - [`socket`]: the hub's sockets, one layer: the limits, the client events parsed once, the
//!   dispatcher, and the transports: [`ws`] (JSON, `/ws`), [`sio`] (Socket.IO, `/socket.io/`)
//!   and [`wire`] (the WebSocket connections under both, which whoever has a message for a
//!   socket writes to directly).
//! - [`source`]: the client address of a request, and the source per-address limits count.
//! - [`webhook`]: the webhooks each saved transition queues in the store's outbox, for the
//!   daemon to deliver to the host application.
//! - [`turn`]: TURN credentials for the REST API, minted with the relay's own scheme,
//!   [`switchboard_turn::credentials`], so that the API mints exactly what the relay verifies.
//!
//! The contract is `shared/spec/phase4-calls.md`; DESIGN.md refines it. This crate knows
//! nothing of sockets below HTTP and WebSocket.

pub mod api;
pub mod auth;
pub mod call;
pub mod domain;
pub mod event;
pub mod hub;
pub mod media;
pub mod model;
pub mod quality;
pub mod revoke;
pub mod service;
pub mod socket;
pub mod source;
pub mod store;
pub mod time;
pub mod turn;
pub mod webhook;

pub use domain::{Domain, Setup};
pub use switchboard_turn::credentials;

// The transports' paths from before `socket` gathered them, which the daemon, the tests and
// signaling/fuzz name.
pub use socket::{limits, sio, wire, ws};
