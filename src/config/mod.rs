//! Turns configuration text into a validated, compiled `Table` plus the settings that are not
//! part of routing (listeners, admin, logging). Owns parsing, validation and compilation; never
//! touches runtime state.
//!
//! Three steps, each in its own file: `raw` (serde structs mirroring the TOML, unknown keys
//! denied), `validate` (every rule, all errors collected with field paths), `compile` (names to
//! indices, weights to ranges, header values prebuilt).

mod compile;
mod parse;
mod raw;
mod source;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use raw::{
    RawAdmin, RawBalance, RawCertificate, RawCompare, RawConfig, RawHealth, RawListen, RawLog,
    RawLogFormat, RawMirror, RawOutlier, RawPin, RawPool, RawProxy, RawRollout, RawRoute,
    RawServer, RawSize, RawSticky, RawTls, RawUpstreamTls, RawWeightedServer,
};

use crate::route::Table;

use source::{Issue, Source};

/// The duration and size parsers every config value goes through, for the fuzz targets.
#[doc(hidden)]
pub use parse::{duration as parse_duration, size as parse_size};

/// A validated config: the routing table and the settings around it.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub table: Table,
    pub settings: Settings,
    /// The config as parsed (for the admin API's `GET /api/v1/config` and persistence).
    pub raw: RawConfig,
}

/// Everything that is not routing: fixed for the life of the process (a change needs a restart),
/// except `log.access`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: Listen,
    pub tls: Option<TlsSettings>,
    pub admin: Option<AdminSettings>,
    pub log: LogSettings,
    /// Runtime threads; 0 = one per core the process may use.
    pub workers: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    /// Where a running veer hands its listeners to `veer run --upgrade`.
    pub upgrade_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub certificates: Vec<CertificatePair>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificatePair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Resolved: `token`, or the value of the variable named by `token_env`.
    pub token: Option<String>,
    pub state_file: Option<PathBuf>,
    /// Reload when the config file's content changes, without a signal.
    pub watch: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// A tracing filter directive (`info`, `veer=debug`, …).
    pub level: String,
    pub access: bool,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where in the source an error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

/// One problem with a config: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `file:line:col` when the config came from a file and the place is known.
    pub location: Option<Location>,
    /// The field path, e.g. `routes[0].split.green` or `pools.blue.servers[1]`; empty for a
    /// file-level problem (unreadable file, syntax error before any field).
    pub path: String,
    pub message: String,
}

/// Every problem found; never only the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.location {
            write!(f, "{}:{}:{}: ", l.file, l.line, l.col)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and compiles a config file. An unreadable file is one error naming the file.
pub fn load(path: &Path) -> Result<Compiled, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => from_toml(&text, &file),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            location: None,
            path: String::new(),
            message: format!("cannot read {file}: {e}"),
        }])),
    }
}

/// Parses, validates and compiles TOML text; errors carry `file:line:col`.
pub fn from_toml(text: &str, file: &str) -> Result<Compiled, ConfigErrors> {
    let source = Source::parse(text, file).map_err(|e| ConfigErrors(vec![e]))?;
    let raw = source.deserialize().map_err(ConfigErrors)?;
    build(raw, |issue| source.place(issue))
}

/// Validates and compiles an already parsed config (the admin API's JSON); no locations.
pub fn from_raw(raw: RawConfig) -> Result<Compiled, ConfigErrors> {
    build(raw, Issue::unplaced)
}

/// Parses JSON (the admin API's `PUT /api/v1/config`), then as `from_raw`. A parse error has
/// no location; its message names the line and column.
pub fn from_json(text: &str) -> Result<Compiled, ConfigErrors> {
    match serde_json::from_str::<RawConfig>(text) {
        Ok(raw) => from_raw(raw),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            location: None,
            path: String::new(),
            message: format!("invalid JSON: {e}"),
        }])),
    }
}

fn build(raw: RawConfig, place: impl Fn(Issue) -> ConfigError) -> Result<Compiled, ConfigErrors> {
    let env = |name: &str| std::env::var(name).ok();
    let issues = validate::validate(&raw, &env);
    if !issues.is_empty() {
        return Err(ConfigErrors(issues.into_iter().map(place).collect()));
    }
    match compile::compile(&raw, &env) {
        Ok((table, settings)) => Ok(Compiled {
            table,
            settings,
            raw,
        }),
        Err(issue) => Err(ConfigErrors(vec![place(issue)])),
    }
}

impl Compiled {
    /// Pools' TLS files that do not load, refused on every path (start, `veer check`, SIGHUP,
    /// the API, a state file) rather than served as something else: plain text where TLS was
    /// asked for.
    pub fn admit(&self) -> Result<(), ConfigErrors> {
        // Every pool's CA, client certificate and key load, and each key matches.
        crate::tls::upstream_clients(&self.table).map(drop)
    }

    /// One line for `veer check`: what is configured and where it listens.
    pub fn summary(&self) -> String {
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let servers = self.table.pools.iter().map(|p| p.servers.len()).sum();
        let mut out = format!(
            "ok: {}, {}, {}; listening on {}",
            count(self.table.routes.len(), "route"),
            count(self.table.pools.len(), "pool"),
            count(servers, "server"),
            self.settings.listen.http,
        );
        if let Some(https) = self.settings.listen.https {
            out.push_str(&format!(", https on {https}"));
        }
        if let Some(admin) = &self.settings.admin {
            out.push_str(&format!(", admin on {}", admin.listen));
        }
        out
    }
}
