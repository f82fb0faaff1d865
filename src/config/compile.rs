//! Turns a validated `RawConfig` into the routing `Table` and the `Settings` around it: defaults
//! applied, names resolved to indices, weights laid out as cumulative ranges, round-robin orders,
//! hashes and header values precomputed. Runs after `validate`, yet never panics if a value does
//! not parse: that comes back as an issue.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;
use indexmap::IndexMap;

use super::parse;
use super::raw::{
    RawAdmin, RawBalance, RawConfig, RawHealth, RawLogFormat, RawMirror, RawOutlier, RawPin,
    RawPool, RawProxy, RawRollout, RawRoute, RawServer, RawSticky, RawUpstreamTls,
};
use super::source::{FieldPath, Issue};
use super::validate::{valid_env_name, Env};
use super::{
    AdminSettings, CertificatePair, Listen, LogFormat, LogSettings, Settings, TlsSettings,
};
use crate::route::hash;
use crate::route::table::{
    Balance, Compare, HealthCheck, Mirror, Outlier, Pin, PinMatch, Pool, PoolId, ProxySettings,
    RolloutPlan, Route, Server, ServerId, SplitEntry, Sticky, Table, UpstreamTls, BUCKETS,
};

pub(crate) const DEFAULT_HTTP: &str = "0.0.0.0:8080";
pub(crate) const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// The longest round-robin order a pool gets; larger weight sums are scaled down.
pub(crate) const RR_CAP: usize = 10_000;

type Res<T> = Result<T, Issue>;
type Pools = IndexMap<String, RawPool>;

fn issue(path: FieldPath, message: impl Into<String>) -> Issue {
    Issue {
        path,
        message: message.into(),
    }
}

/// A validated config into its table (version 0) and settings.
pub(crate) fn compile(raw: &RawConfig, env: Env<'_>) -> Res<(Table, Settings)> {
    let root = FieldPath::root();
    let pools = raw
        .pools
        .iter()
        .map(|(name, p)| pool(root.key("pools").key(name), name, p))
        .collect::<Res<Vec<_>>>()?;
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| route(root.key("routes").index(i), r, &raw.pools))
        .collect::<Res<Vec<_>>>()?;
    let table = Table {
        version: 0,
        routes,
        pools,
        proxy: proxy(raw.proxy.as_ref())?,
    };
    Ok((table, settings(raw, env)?))
}

/// The admin token: `token`, or the non-empty value of the variable `token_env` names.
pub(crate) fn resolve_token(admin: &RawAdmin, env: Env<'_>) -> Option<String> {
    if let Some(token) = &admin.token {
        return Some(token.clone()).filter(|t| !t.trim().is_empty());
    }
    let var = admin.token_env.as_deref().filter(|v| valid_env_name(v))?;
    env(var).filter(|v| !v.is_empty())
}

fn duration(path: FieldPath, value: Option<&String>, default: Duration) -> Res<Duration> {
    value.map_or(Ok(default), |v| {
        parse::duration(v).map_err(|m| issue(path, m))
    })
}

fn socket_addr(path: FieldPath, value: &str) -> Res<SocketAddr> {
    parse::socket_addr(value).map_err(|m| issue(path, m))
}

fn pool_id(pools: &Pools, name: &str, path: FieldPath) -> Res<PoolId> {
    pools
        .get_index_of(name)
        .and_then(|i| PoolId::try_from(i).ok())
        .ok_or_else(|| issue(path, format!("unknown pool {name:?}")))
}

fn settings(raw: &RawConfig, env: Env<'_>) -> Res<Settings> {
    let path = FieldPath::root().key("listen");
    let listen = raw.listen.as_ref();
    let http = listen
        .and_then(|l| l.http.as_deref())
        .unwrap_or(DEFAULT_HTTP);
    let https = listen.and_then(|l| l.https.as_deref());
    let tls = raw
        .tls
        .as_ref()
        .filter(|t| !t.certificates.is_empty())
        .map(|t| TlsSettings {
            certificates: t
                .certificates
                .iter()
                .map(|c| CertificatePair {
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                })
                .collect(),
        });
    let log = raw.log.as_ref();
    Ok(Settings {
        listen: Listen {
            http: socket_addr(path.key("http"), http)?,
            https: https
                .map(|s| socket_addr(path.key("https"), s))
                .transpose()?,
            upgrade_socket: raw
                .listen
                .as_ref()
                .and_then(|l| l.upgrade_socket.as_ref())
                .map(PathBuf::from),
        },
        tls,
        admin: raw.admin.as_ref().map(|a| admin(a, env)).transpose()?,
        log: LogSettings {
            level: log
                .and_then(|l| l.level.clone())
                .unwrap_or_else(|| "info".into()),
            access: log.and_then(|l| l.access).unwrap_or(false),
            format: match log.and_then(|l| l.format) {
                Some(RawLogFormat::Json) => LogFormat::Json,
                Some(RawLogFormat::Text) | None => LogFormat::Text,
            },
        },
        workers: raw.proxy.as_ref().and_then(|p| p.workers).unwrap_or(0),
    })
}

fn admin(a: &RawAdmin, env: Env<'_>) -> Res<AdminSettings> {
    let path = FieldPath::root().key("admin").key("listen");
    let listen = socket_addr(path.clone(), a.listen.as_deref().unwrap_or(DEFAULT_ADMIN))?;
    let token = resolve_token(a, env);
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(issue(
            path,
            "the admin listener is not on loopback and has no token",
        ));
    }
    Ok(AdminSettings {
        listen,
        token,
        state_file: a.state_file.clone(),
        watch: a.watch.unwrap_or(false),
    })
}

fn proxy(p: Option<&RawProxy>) -> Res<ProxySettings> {
    let d = ProxySettings::default();
    let Some(p) = p else { return Ok(d) };
    let path = FieldPath::root().key("proxy");
    let dur =
        |field: &str, v: &Option<String>, default| duration(path.key(field), v.as_ref(), default);
    Ok(ProxySettings {
        connect_timeout: dur("connect_timeout", &p.connect_timeout, d.connect_timeout)?,
        request_timeout: dur("request_timeout", &p.request_timeout, d.request_timeout)?,
        idle_timeout: dur("idle_timeout", &p.idle_timeout, d.idle_timeout)?,
        header_read_timeout: dur(
            "header_read_timeout",
            &p.header_read_timeout,
            d.header_read_timeout,
        )?,
        max_connections: p.max_connections.unwrap_or(d.max_connections),
        retries: p.retries.unwrap_or(d.retries),
        shutdown_grace: dur("shutdown_grace", &p.shutdown_grace, d.shutdown_grace)?,
        upstream_idle_timeout: dur(
            "upstream_idle_timeout",
            &p.upstream_idle_timeout,
            d.upstream_idle_timeout,
        )?,
        expose_pool_header: p.expose_pool_header.unwrap_or(d.expose_pool_header),
    })
}

fn pool(path: FieldPath, name: &str, p: &RawPool) -> Res<Pool> {
    if p.servers.len() > usize::from(ServerId::MAX) {
        return Err(issue(path.key("servers"), "too many servers"));
    }
    let servers = p
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| server(path.key("servers").index(i), name, s))
        .collect::<Res<Vec<_>>>()?;
    let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
    Ok(Pool {
        name: name.into(),
        name_header: HeaderValue::from_str(name)
            .map_err(|_| issue(path.clone(), format!("invalid pool name {name:?}")))?,
        rr_order: rr_order(&weights),
        servers,
        balance: match p.balance {
            Some(RawBalance::LeastRequest) => Balance::LeastRequest,
            Some(RawBalance::RoundRobin) | None => Balance::RoundRobin,
        },
        health: p
            .health
            .as_ref()
            .map(|h| health(path.key("health"), h))
            .transpose()?,
        outlier: outlier(path.key("outlier"), p.outlier.as_ref())?,
        tls: p.tls.as_ref().map(upstream_tls),
    })
}

fn server(path: FieldPath, pool: &str, s: &RawServer) -> Res<Server> {
    let addr = s.addr();
    let target = parse::server_target(addr).map_err(|m| issue(path, m))?;
    Ok(Server {
        addr: addr.into(),
        target,
        weight: s.weight().unwrap_or(1),
        cookie_id: hash::server_cookie_id(pool, addr),
    })
}

/// Smooth weighted round-robin (nginx): each step adds every weight to its server's current
/// value, picks the largest (the first on a tie) and takes the total from it. Weights 5,1,1 give
/// a a b a c a a. Sums above `RR_CAP` are scaled down (each weight at least 1), and the order is
/// cut at `RR_CAP` entries.
pub(crate) fn rr_order(weights: &[u32]) -> Box<[ServerId]> {
    let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let cap = RR_CAP as u64;
    let scaled: Vec<i64> = weights
        .iter()
        .map(|w| {
            let w = u64::from(*w);
            let w = if sum > cap { (w * cap / sum).max(1) } else { w };
            i64::try_from(w).unwrap_or(i64::MAX)
        })
        .collect();
    let total: i64 = scaled.iter().sum();
    let len = usize::try_from(total).unwrap_or(RR_CAP).min(RR_CAP);
    let mut current = vec![0i64; scaled.len()];
    let mut order = Vec::with_capacity(len);
    for _ in 0..len {
        let mut best = 0;
        for (i, w) in scaled.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(ServerId::try_from(best).unwrap_or_default());
    }
    order.into_boxed_slice()
}

fn health(path: FieldPath, h: &RawHealth) -> Res<HealthCheck> {
    Ok(HealthCheck {
        path: h.path.as_deref().unwrap_or("/").into(),
        interval: duration(
            path.key("interval"),
            h.interval.as_ref(),
            Duration::from_secs(2),
        )?,
        timeout: duration(
            path.key("timeout"),
            h.timeout.as_ref(),
            Duration::from_secs(1),
        )?,
        healthy_threshold: h.healthy_threshold.unwrap_or(2),
        unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3),
    })
}

fn outlier(path: FieldPath, o: Option<&RawOutlier>) -> Res<Outlier> {
    let d = Outlier::default();
    let Some(o) = o else { return Ok(d) };
    let max_ejection_percent = match o.max_ejection_percent {
        None => d.max_ejection_percent,
        Some(p) => u8::try_from(p)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| issue(path.key("max_ejection_percent"), "outside 0..=100"))?,
    };
    Ok(Outlier {
        consecutive_failures: o.consecutive_failures.unwrap_or(d.consecutive_failures),
        base_ejection: duration(
            path.key("base_ejection"),
            o.base_ejection.as_ref(),
            d.base_ejection,
        )?,
        max_ejection_percent,
    })
}

fn upstream_tls(t: &RawUpstreamTls) -> UpstreamTls {
    UpstreamTls {
        sni: t.sni.as_deref().map(Into::into),
        ca: t.ca.clone(),
        cert: t.cert.clone(),
        key: t.key.clone(),
    }
}

fn route(path: FieldPath, r: &RawRoute, pools: &Pools) -> Res<Route> {
    let hosts = r
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| parse::host_pattern(h).map_err(|m| issue(path.key("hosts").index(i), m)))
        .collect::<Res<Vec<_>>>()?;
    let (split, total_weight) = split(path.key("split"), &r.split, pools)?;
    let pins = r
        .pin
        .iter()
        .enumerate()
        .map(|(i, p)| pin(path.key("pin").index(i), p, pools))
        .collect::<Res<Vec<_>>>()?;
    let hash_key = r
        .hash_key
        .as_deref()
        .map(|k| parse::hash_key(k).map_err(|m| issue(path.key("hash_key"), m)))
        .transpose()?;
    Ok(Route {
        name: r.name.as_str().into(),
        hosts,
        path_prefix: r.path_prefix.as_deref().unwrap_or("/").into(),
        split,
        total_weight,
        pins,
        hash_key,
        seed: hash::route_seed(&r.name),
        sticky: r
            .sticky
            .as_ref()
            .map(|s| sticky(path.key("sticky"), s))
            .transpose()?,
        mirror: r
            .mirror
            .as_ref()
            .map(|m| mirror(path.key("mirror"), m, pools))
            .transpose()?,
        rollout: r
            .rollout
            .as_ref()
            .map(|p| rollout(path.key("rollout"), p, pools))
            .transpose()?,
    })
}

/// The split in config order with cumulative upper bounds: entry i owns
/// `[upper(i-1), upper(i))`, `upper(i) = cumulative weight through i * BUCKETS / total`.
fn split(
    path: FieldPath,
    split: &IndexMap<String, u32>,
    pools: &Pools,
) -> Res<(Vec<SplitEntry>, u32)> {
    let total: u64 = split.values().map(|w| u64::from(*w)).sum();
    let total_weight = u32::try_from(total)
        .ok()
        .filter(|t| *t > 0)
        .ok_or_else(|| {
            issue(
                path.clone(),
                "the split's weights must add up to more than 0",
            )
        })?;
    let mut cumulative = 0u64;
    let mut entries = Vec::with_capacity(split.len());
    for (name, weight) in split {
        cumulative += u64::from(*weight);
        let upper = cumulative * u64::from(BUCKETS) / total;
        entries.push(SplitEntry {
            pool: pool_id(pools, name, path.key(name))?,
            weight: *weight,
            upper: u16::try_from(upper).unwrap_or(BUCKETS),
        });
    }
    Ok((entries, total_weight))
}

fn sticky(path: FieldPath, s: &RawSticky) -> Res<Sticky> {
    let max_age = duration(
        path.key("max_age"),
        s.max_age.as_ref(),
        Duration::from_secs(3600),
    )?;
    Ok(Sticky {
        cookie: s.cookie.as_str().into(),
        max_age,
        attributes: format!(
            "; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
            max_age.as_secs()
        )
        .into(),
    })
}

fn pin(path: FieldPath, p: &RawPin, pools: &Pools) -> Res<Pin> {
    let matcher = match (&p.header, &p.cookie, &p.source) {
        (Some(header), None, None) => PinMatch::Header {
            name: parse::header_name(header).map_err(|m| issue(path.key("header"), m))?,
            equals: p.equals.as_deref().map(|e| e.as_bytes().into()),
        },
        (None, Some(cookie), None) => PinMatch::Cookie {
            name: cookie.as_str().into(),
            equals: p.equals.as_deref().map(Into::into),
        },
        (None, None, Some(sources)) => PinMatch::Source(
            sources
                .iter()
                .enumerate()
                .map(|(i, s)| parse::cidr(s).map_err(|m| issue(path.key("source").index(i), m)))
                .collect::<Res<Vec<_>>>()?,
        ),
        _ => {
            return Err(issue(
                path,
                "a pin needs exactly one of `header`, `cookie` or `source`",
            ))
        }
    };
    Ok(Pin {
        matcher,
        pool: pool_id(pools, &p.pool, path.key("pool"))?,
    })
}

/// Copies in flight per mirrored route when `max_in_flight` is not set.
const DEFAULT_MIRROR_IN_FLIGHT: u32 = 256;

fn mirror(path: FieldPath, m: &RawMirror, pools: &Pools) -> Res<Mirror> {
    let percent = u8::try_from(m.percent.unwrap_or(100))
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| issue(path.key("percent"), "outside 0..=100"))?;
    let max_body = match &m.max_body {
        Some(size) => parse::size(size).map_err(|e| issue(path.key("max_body"), e))?,
        None => 1 << 20,
    };
    let max_in_flight = m.max_in_flight.unwrap_or(DEFAULT_MIRROR_IN_FLIGHT).max(1);
    Ok(Mirror {
        pool: pool_id(pools, &m.pool, path.key("pool"))?,
        percent,
        max_body,
        max_in_flight,
    })
}

fn rollout(path: FieldPath, r: &RawRollout, pools: &Pools) -> Res<RolloutPlan> {
    let steps = r
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            u8::try_from(*s)
                .ok()
                .filter(|s| (1..=100).contains(s))
                .ok_or_else(|| issue(path.key("steps").index(i), "outside 1..=100"))
        })
        .collect::<Res<Vec<_>>>()?;
    Ok(RolloutPlan {
        stable: pool_id(pools, &r.stable, path.key("stable"))?,
        canary: pool_id(pools, &r.canary, path.key("canary"))?,
        steps,
        interval: duration(
            path.key("interval"),
            r.interval.as_ref(),
            Duration::from_secs(60),
        )?,
        max_error_rate: r.max_error_rate,
        max_p99: match &r.max_p99 {
            Some(text) => Some(duration(path.key("max_p99"), Some(text), Duration::ZERO)?),
            None => None,
        },
        min_requests: r.min_requests.unwrap_or(50),
        compare: r.compare.as_ref().map(|c| Compare {
            max_error_increase: c.max_error_increase.unwrap_or(0.0),
            max_p99_ratio: c.max_p99_ratio,
            confidence: c.confidence.unwrap_or(0.95),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_is_smooth() {
        assert_eq!(&*rr_order(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&*rr_order(&[1, 1]), &[0, 1]);
        assert_eq!(&*rr_order(&[2]), &[0, 0]);
    }

    #[test]
    fn round_robin_is_capped() {
        let order = rr_order(&[1_000_000, 1]);
        assert_eq!(order.len(), RR_CAP);
        assert_eq!(order.iter().filter(|s| **s == 1).count(), 1);
        assert_eq!(rr_order(&[u32::MAX, u32::MAX]).len(), RR_CAP);
    }
}
