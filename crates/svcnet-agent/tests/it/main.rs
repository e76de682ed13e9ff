//! Integration tests of the agent's runner core and echo server with real processes and
//! sockets on loopback addresses (no API server).

mod e2e;
mod echo;
mod runner;
