//! Integration tests of the speaker, in network namespaces the tests create.

mod announce;
mod election;
mod netns;
