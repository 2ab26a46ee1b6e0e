//! Whole calls through the daemon: headless Chromium (relay-only calls, the demo page, the
//! worked chat app) and webrtc-rs peers. One test binary; each module was a binary of its own.

#[path = "../common/mod.rs"]
mod common;

mod call_webrtc_rs;
mod chat_app;
mod demo_chromium;
mod relay_chromium;
mod relay_webrtc_rs;
