#![allow(clippy::unwrap_used)]
//! Integration tests of the agent's runner core and echo server with real processes and
//! sockets on loopback addresses (no API server).

mod bridge;
mod echo;
mod runner;
