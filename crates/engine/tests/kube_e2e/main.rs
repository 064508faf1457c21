//! The engine end to end on the real test cluster (scripts/cluster: kube-apiserver, the
//! controllers, kwok's fake kubelets): deployments requested and commanded over the real HTTP
//! API, driven by the real engine and the Kubernetes driver, each test asserting what the
//! Kubernetes API shows. Run with
//!
//! ```sh
//! scripts/cluster/build && eval "export $(scripts/cluster/start)"
//! SLIPWAY_TEST_KUBECONFIG=$KUBECONFIG cargo test -p slipway-engine --test kube_e2e
//! ```
//!
//! Each test works in its own namespace (deleted at the end) and its own database.

// unwrap/expect: allowed in the #[test] functions (clippy.toml) and in `harness` (its own
// `allow`, helpers fail the test with a message).

mod blue_green;
mod canary;
mod commands;
mod fencing;
mod harness;
mod ownership;
mod rolling;
mod routed;
