//! The wire: every type, route, header and signature rule that the server, the agent and the
//! operator CLI share. This module depends on no runtime (no tokio, axum, ureq or sled), so both the
//! async server and the blocking agent use exactly the same definitions.

pub mod admin;
pub mod audit;
pub mod busy;
pub mod bytes;
pub mod facts;
pub mod features;
pub mod files;
pub mod jobs;
pub mod limit_table;
pub mod limits;
pub mod operators;
pub mod private_dir;
pub mod secret;
pub mod sign;
pub mod task;
pub mod task_query;
pub mod wire;

pub use secret::{Secret, read_secret_file};
pub use sign::{SignError, Signer};
pub use task::{TaskId, TaskStatus};
pub use wire::{Envelope, RegisterRequest, ReportRequest, WireTask};
