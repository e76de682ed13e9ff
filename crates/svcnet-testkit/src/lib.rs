//! Helpers shared by tests: network-namespace guards, fixtures.
