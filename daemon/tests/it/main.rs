//! sfud's integration tests: the real daemon, in-process on ephemeral
//! ports, driven by real WebSocket and WebRTC clients.
//!
//! Media tests need a loopback-only network: run this binary inside a fresh
//! network namespace (`unshare -n`, `ip link set lo up`), as `.ci/run` does.

mod bad_input;
mod cluster;
mod cluster_relay;
mod control;
mod forwarding;
mod harness;
mod metrics;
mod recording;
mod rooms;
mod systemd;
mod workers;
