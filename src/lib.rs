//! orange: one binary that sends work to a fleet of hosts that poll a central server.
//!
//! # Layout
//! - [`protocol`]: the wire (routes, JSON bodies, signing, task states), shared by all parts.
//! - [`server`]: `orange server`: HTTP endpoints, dispatch of long polls, the sled store.
//! - [`agent`]: `orange agent`: the blocking poll loop and the executors that run tasks.
//! - [`client`]: the blocking HTTP client used by the agent and the operator CLI, and which
//!   HTTP proxy, if any, it reaches a server through ([`client::proxy`]).
//! - [`cli`]: command-line parsing and the operator commands (`orange task ...`, `orange agents`).

pub mod agent;
pub mod cli;
pub mod client;
pub mod protocol;
pub mod server;
