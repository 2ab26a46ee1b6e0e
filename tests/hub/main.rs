//! The signaling hub over its transports: JSON frames on `/ws`, Engine.IO polling and
//! WebSocket, and the npm socket.io-client on `/socket.io/`. One test binary; each module was a
//! binary of its own.

#[path = "../common/mod.rs"]
mod common;

mod hub_eio;
mod hub_sfu;
mod hub_sio;
mod hub_ws;
