//! The config as written: serde structs that mirror SPEC.md's TOML one to one. Unknown keys are
//! denied everywhere, so a typo is an error, never a silently ignored setting. Values stay as the
//! user wrote them (durations and sizes as text, names as strings, defaults left out) so that
//! serializing back, for `GET /api/v1/config`, shows the config and invents nothing. Checking is
//! `validate`'s job and defaults are applied by `compile`.

use std::fmt;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The root of a config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<RawListen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<RawAdmin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<RawProxy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<RawLog>,
    /// In config order: pool ids follow it.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub pools: IndexMap<String, RawPool>,
    /// In file order: the first route that matches wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
}

/// `[listen]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// Default `0.0.0.0:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<String>,
    /// The Unix socket `veer run --upgrade` takes over through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_socket: Option<String>,
}

/// `[tls]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[admin]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Default `127.0.0.1:9901`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// Poll the config file's content and reload when it changes (a Kubernetes ConfigMap
    /// update needs no signal). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<bool>,
}

/// `[proxy]`: every field defaults to `route::table::ProxySettings::default()`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_read_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_pool_header: Option<bool>,
}

/// `[log]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// A tracing filter directive; default `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<RawLogFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawLogFormat {
    Text,
    Json,
}

/// `[pools.NAME]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub servers: Vec<RawServer>,
    /// Default `round_robin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<RawBalance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawUpstreamTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<RawHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<RawOutlier>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawBalance {
    LeastRequest,
    RoundRobin,
}

/// A server: `"host:port"` or `{ addr = "host:port", weight = N }`. Deserialized by hand (not
/// `untagged`) so that a mistake inside the table form gets serde's precise message.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RawServer {
    Addr(String),
    Weighted(RawWeightedServer),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedServer {
    pub addr: String,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl RawServer {
    pub fn addr(&self) -> &str {
        match self {
            RawServer::Addr(a) => a,
            RawServer::Weighted(w) => &w.addr,
        }
    }

    /// The weight as written (`None`: the default).
    pub fn weight(&self) -> Option<u32> {
        match self {
            RawServer::Addr(_) => None,
            RawServer::Weighted(w) => w.weight,
        }
    }
}

impl<'de> Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ServerVisitor;
        impl<'de> Visitor<'de> for ServerVisitor {
            type Value = RawServer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a server address \"host:port\" or a table { addr = \"host:port\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawServer, E> {
                Ok(RawServer::Addr(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawServer, A::Error> {
                let d = de::value::MapAccessDeserializer::new(map);
                RawWeightedServer::deserialize(d).map(RawServer::Weighted)
            }
        }
        d.deserialize_any(ServerVisitor)
    }
}

/// A size: bytes as an integer, or text with a unit (`"64KiB"`, `"10MiB"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes or a string with a unit, like \"64KiB\" or \"10MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                u64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// `[pools.NAME.tls]`: upstream (m)TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[pools.NAME.health]`: defaults path `/`, interval 2s, timeout 1s, thresholds 2 and 3.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
}

/// `[pools.NAME.outlier]`: defaults per `route::table::Outlier::default()`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection: Option<String>,
    /// Wider than the compiled `u8` so that `300` gets a range message, not a type error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

/// `[[routes]]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    /// Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Pool name to relative weight, in config order (the order decides who moves on a change).
    pub split: IndexMap<String, u32>,
    /// `header:NAME`, `cookie:NAME` or `client_ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<RawSticky>,
    /// Pinning rules, first match wins (`[[routes.pin]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin: Vec<RawPin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<RawMirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RawRollout>,
}

/// `sticky = { cookie = "…", max_age = "1h" }`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub cookie: String,
    /// Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// `[[routes.pin]]`: exactly one of `header`, `cookie`, `source`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// With `header` or `cookie`: the value must equal this; without it any value matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// Client addresses in CIDR notation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Vec<String>>,
    pub pool: String,
}

/// `[routes.mirror]`: defaults percent 100, max_body 1MiB, max_in_flight 256.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub pool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<RawSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
}

/// `[routes.rollout]`: defaults interval 1m, min_requests 50. Each limit (`max_error_rate`,
/// `max_p99`, `compare`) applies only when set; a plan with none is a timed ramp.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    pub stable: String,
    pub canary: String,
    pub steps: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<RawCompare>,
}

/// `compare = { max_error_increase, max_p99_ratio, confidence }`: the canary judged against
/// the stable pool's requests in the same window. Defaults: max_error_increase 0, confidence
/// 0.95; without `max_p99_ratio` latency is not compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_increase: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_take_both_forms() {
        let pool: RawPool =
            toml::from_str("servers = [\"a:1\", { addr = \"b:2\", weight = 3 }]").unwrap();
        assert_eq!(pool.servers[0].addr(), "a:1");
        assert_eq!(pool.servers[0].weight(), None);
        assert_eq!(pool.servers[1].addr(), "b:2");
        assert_eq!(pool.servers[1].weight(), Some(3));
    }

    #[test]
    fn a_typo_in_a_server_table_is_named() {
        let err =
            toml::from_str::<RawPool>("servers = [{ addr = \"b:2\", wieght = 3 }]").unwrap_err();
        assert!(err.message().contains("unknown field `wieght`"), "{err}");
    }

    #[test]
    fn sizes_take_integers_and_text() {
        let m: RawMirror = toml::from_str("pool = \"s\"\nmax_body = 42").unwrap();
        assert_eq!(m.max_body, Some(RawSize::Bytes(42)));
        let m: RawMirror = toml::from_str("pool = \"s\"\nmax_body = \"1MiB\"").unwrap();
        assert_eq!(m.max_body, Some(RawSize::Text("1MiB".into())));
        assert!(toml::from_str::<RawMirror>("pool = \"s\"\nmax_body = -1").is_err());
    }

    #[test]
    fn serializing_back_invents_nothing() {
        let raw: RawConfig = toml::from_str(
            "[pools.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nsplit = { a = 1 }",
        )
        .unwrap();
        let json = serde_json::to_string(&raw).unwrap();
        assert_eq!(
            json,
            r#"{"pools":{"a":{"servers":["127.0.0.1:1"]}},"routes":[{"name":"r","split":{"a":1}}]}"#
        );
        let back: RawConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, raw);
    }
}
