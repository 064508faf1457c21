//! Rollouts as pure state machines: `decide(spec, state, observation, commands, now)` returns
//! the next state, the idempotent actions to apply to the cluster, and when to look again.
//!
//! Nothing here does I/O or reads a clock: the engine passes `now`, what the cluster driver
//! observed, and the commands people issued; it stores the returned state (every timer in it is
//! an absolute deadline) and hands the actions to the driver. Re-running a decision with the
//! same inputs gives the same result, so a worker that dies mid-step loses nothing.
//!
//! - [`start`] gives the state a deployment begins in when it leaves the queue;
//! - [`accepts`] says whether a command makes sense now (the API answers 409 when not);
//! - [`decide`] is one tick: it consumes the commands, re-emits every action whose goal is not
//!   yet observed, moves through phases ([`phase`]) as their goals are observed, and enforces
//!   the progress deadline (per phase; pauses and gates do not count).

mod blue_green;
mod budget;
mod canary;
mod commands;
mod machine;
pub mod phase;
mod rolling;
mod start;
mod types;

pub use budget::{Budget, resolve_budget};
pub use commands::{accepts, retries};
pub use machine::{FIRST_POLL, HOLD_POLL, POLL, decide, failure_code, refused};
pub use phase::Phase;
pub use start::start;
pub use types::*;
