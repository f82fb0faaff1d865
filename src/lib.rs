//! veer: a layer-7 reverse proxy that shifts traffic between versions of an application.
//!
//! The map of the house: `config` turns text into a `route::Table`; `route` decides where a
//! request goes; `proxy` and `upstream` move its bytes; `health` knows about servers; `stats` counts
//! each route's requests per pool and `rollout` walks a canary through its plan on them;
//! `mirror` sends shadow copies; `server` owns listeners and connections, `tls` the
//! certificates; `state` holds the shared handles; `run` ties them together for the CLI;
//! `demo` is the embedded default.

pub mod access_format;
pub mod admin;
pub mod config;
pub mod conn;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod handover;
pub mod health;
pub mod http1;
pub mod kept;
pub mod lanes;
pub mod metrics;
pub mod mirror;
pub mod outcome;
pub mod proxy;
pub mod reload;
pub mod rollout;
pub mod route;
pub mod run;
pub mod server;
pub mod state;
pub mod stats;
pub mod telemetry;
pub mod tls;
pub mod upstream;
