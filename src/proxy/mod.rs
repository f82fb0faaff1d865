//! One request's I/O: `handle` (called by both servers, never failing) loads the table snapshot
//! once, asks `route::decide`, forwards over `upstream`, and streams the answer back. Every
//! failure becomes a response in `error`, the one map from failure to status.

pub mod access;
pub mod body;
pub mod error;
pub mod forward;
pub mod headers;
pub mod service;
pub mod upgrade;

pub use body::RespBody;
pub use error::ProxyError;
pub use service::handle;
