//! The integration tests, one crate so that the test binary is linked once: each module is one
//! area of behaviour, all driven through the harness in [`support`], which starts the real
//! `orange` binary (server, agents, operator CLI) on ephemeral ports.

mod support;

mod backup;
mod bad_input;
mod batch;
mod bytes;
mod cli_conventions;
mod command_words;
mod compaction;
mod completions;
mod config_files;
mod console;
mod copy;
mod crash_random;
mod down_hosts;
mod durability;
mod end_to_end;
mod failover;
mod faults;
mod features;
mod fuzz;
mod inventory;
mod job_retry;
mod jobs;
mod jobs_api;
mod layers;
mod legacy_protocol;
mod lifecycle;
mod lists;
mod logs;
mod man_page;
mod metrics;
mod operators;
mod orphans;
mod overload;
mod owned_task;
mod postgres;
mod postgres_tls;
mod presence;
mod probes;
mod proxies;
mod run_as;
mod secret_env;
mod security;
mod stdin;
mod store_copy;
mod systemd;
mod unit_files;
mod vocabulary;
mod wal;
