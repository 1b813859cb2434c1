//! banyan: an incremental migration proxy for the strangler-fig pattern, on Pingora.
//!
//! The data path (`proxy`, `routes`, `upstream`) and the control plane (`control`,
//! `admin`, `cli`) meet only at the compiled [`snapshot::Snapshot`] held in an `ArcSwap`.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod compare;
pub mod config;
pub mod control;
pub mod demo;
pub mod diag;
pub mod guard;
pub mod http1;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod priority;
pub mod proxy;
pub mod ratelimit;
pub mod rlimit;
pub mod routes;
pub mod shadow;
pub mod snapshot;
pub mod tls;
pub mod tomlspan;
pub mod upstream;
