//! sfu-load's integration tests: short runs of every scenario against the
//! real daemon, in-process on loopback.

mod smoke;
