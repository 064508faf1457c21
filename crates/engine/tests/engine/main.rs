//! The engine against a real Postgres (one database per test) and the simulated cluster.

#![expect(
    clippy::expect_used,
    reason = "helpers of the tests fail the test with a message, like the tests themselves"
)]

mod chain;
mod common;
mod concurrency;
mod failures;
mod github_status;
mod group_commit;
mod http;
mod leases;
mod ownership;
mod queue;
mod recovery;
mod statements;
mod strategies;
