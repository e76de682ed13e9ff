//! Integration tests of the API server: real kubectl, a real kube-rs client, and hostile input,
//! each against a fresh in-process server on a loopback port.

mod bad_input;
mod common;
mod etcd;
mod kube_client;
mod kubectl;
