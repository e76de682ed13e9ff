//! The store conformance suite: every behaviour the API server relies on, checked against the
//! embedded store and a real etcd (started on free loopback ports by `harness`).

mod concurrency;
mod crash;
mod crud;
mod harness;
mod model;
mod txn;
mod watch;
