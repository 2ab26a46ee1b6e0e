//! The TURN relay from outside: coturn's client tools over UDP, TCP, TLS and IPv6, our own
//! STUN/TURN client for the error answers and the stream transports, and floods from a network
//! namespace (unauthenticated Allocates, TLS handshakes). One test binary; each module was a binary of its own.

#[path = "../common/mod.rs"]
mod common;

mod relay_abuse;
mod relay_bandwidth;
mod relay_coturn;
mod relay_errors;
mod relay_flood;
mod relay_streams;
