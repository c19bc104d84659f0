//! Wire types shared by the daemon and its clients.
//!
//! This crate has no async runtime, WebRTC or GStreamer dependency, so the
//! CLI, the test client and the load generator can share one definition of
//! every message with the daemon.

pub mod control;
pub mod signaling;
