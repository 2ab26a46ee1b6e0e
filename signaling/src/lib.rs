//! switchboard-signaling: the call domain.
//!
//! This crate will hold the call state machine, the SQLite call store, the REST handlers for
//! `/api/calls` and the WebSocket signaling hub (see `shared/spec/phase4-calls.md`). It knows
//! nothing of sockets below WebSocket; the one thing it takes from the relay is the credential
//! scheme, [`switchboard_turn::credentials`], so that the REST API mints exactly what the relay
//! verifies.

pub use switchboard_turn::credentials;
