//! Integration tests of svcnet-dns: the real `dig` against the real server on loopback, fed
//! with the fixture objects in `tests/fixtures/cluster.json` (no API server).

mod cache;
mod harness;
mod records;
mod recursion;
mod search_path;
mod transport;
