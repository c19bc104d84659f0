//! End-to-end tests of the client against an in-process fake server.

mod fake_server;
mod loopback;
