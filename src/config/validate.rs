//! Every rule a config must follow, checked on the raw structs before anything is compiled.
//! Collects all issues, each with its field path; never stops at the first. Placing an issue in
//! the text is `source`'s job; value syntax (addresses, durations, names) is `parse`'s.

use std::collections::HashMap;
use std::net::SocketAddr;

use indexmap::IndexMap;

use super::compile::{resolve_token, DEFAULT_ADMIN, DEFAULT_HTTP};
use super::parse;
use super::raw::{
    RawAdmin, RawConfig, RawHealth, RawMirror, RawOutlier, RawPin, RawPool, RawProxy, RawRollout,
    RawRoute, RawServer, RawSticky, RawUpstreamTls,
};
use super::source::{FieldPath, Issue};
use crate::route::table::Target;

/// Reads an environment variable (the real environment, or a fake in tests).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Ids are `u16`: at most this many pools, routes, and servers per pool.
const MAX_ITEMS: usize = u16::MAX as usize;

/// Every issue in `raw`, in a stable order (top to bottom, roughly as in the file).
pub(crate) fn validate(raw: &RawConfig, env: Env<'_>) -> Vec<Issue> {
    let mut c = Checker {
        issues: Vec::new(),
        pools: &raw.pools,
    };
    c.listeners(raw);
    if let Some(admin) = &raw.admin {
        c.admin(admin, env);
    }
    if let Some(proxy) = &raw.proxy {
        c.proxy(proxy);
    }
    if let Some(level) = raw.log.as_ref().and_then(|l| l.level.as_deref()) {
        c.result(root().key("log").key("level"), parse::log_filter(level));
    }
    c.pools();
    if raw.routes.is_empty() {
        // An empty or truncated file must never become a table that answers everything 404.
        c.err(
            root().key("routes"),
            "no routes: every request would be answered 404; add at least one [[routes]] section",
        );
    }
    c.routes(&raw.routes);
    c.issues
}

fn root() -> FieldPath {
    FieldPath::root()
}

struct Checker<'a> {
    issues: Vec<Issue>,
    pools: &'a IndexMap<String, RawPool>,
}

impl Checker<'_> {
    fn err(&mut self, path: FieldPath, message: impl Into<String>) {
        self.issues.push(Issue {
            path,
            message: message.into(),
        });
    }

    fn result<T>(&mut self, path: FieldPath, result: Result<T, String>) -> Option<T> {
        result.map_err(|m| self.err(path, m)).ok()
    }

    fn duration(&mut self, path: FieldPath, value: Option<&str>, nonzero: bool) {
        let Some(value) = value else { return };
        match parse::duration(value) {
            Ok(d) if nonzero && d.is_zero() => {
                self.err(path, format!("{value:?} must be more than 0"))
            }
            Ok(_) => {}
            Err(m) => self.err(path, m),
        }
    }

    fn at_least_one<T: Into<u64> + Copy>(&mut self, path: FieldPath, value: Option<T>) {
        if value.is_some_and(|v| v.into() == 0) {
            self.err(path, "must be at least 1");
        }
    }

    fn known_pool(&mut self, path: FieldPath, name: &str) {
        if self.pools.contains_key(name) {
            return;
        }
        let known: Vec<&str> = self.pools.keys().map(String::as_str).collect();
        let hint = if known.is_empty() {
            "no pools are defined".to_owned()
        } else {
            format!("known pools: {}", known.join(", "))
        };
        self.err(path, format!("unknown pool {name:?}; {hint}"));
    }

    fn listeners(&mut self, raw: &RawConfig) {
        let listen = root().key("listen");
        let mut bound = Vec::new();
        let http = raw.listen.as_ref().and_then(|l| l.http.as_deref());
        self.listener(listen.key("http"), http.unwrap_or(DEFAULT_HTTP), &mut bound);
        if let Some(https) = raw.listen.as_ref().and_then(|l| l.https.as_deref()) {
            self.listener(listen.key("https"), https, &mut bound);
            if raw.tls.as_ref().is_none_or(|t| t.certificates.is_empty()) {
                self.err(listen.key("https"), "`https` needs certificates: add [tls] with certificates = [{ cert = \"cert.pem\", key = \"key.pem\" }]");
            }
        }
        if let Some(admin) = &raw.admin {
            let addr = admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN);
            self.listener(root().key("admin").key("listen"), addr, &mut bound);
        }
        if let Some(socket) = raw
            .listen
            .as_ref()
            .and_then(|l| l.upgrade_socket.as_deref())
        {
            let path = listen.key("upgrade_socket");
            if socket.trim().is_empty() {
                self.err(path, "empty path");
            } else if socket.len() > 100 {
                // sun_path holds 108 bytes on Linux, fewer elsewhere.
                self.err(
                    path,
                    format!("{socket:?} is too long for a Unix socket path (at most 100 bytes)"),
                );
            }
        }
        self.certificates(raw);
    }

    /// Checks one listener address and that it does not overlap one already bound.
    fn listener(&mut self, path: FieldPath, addr: &str, bound: &mut Vec<(FieldPath, SocketAddr)>) {
        let Some(addr) = self.result(path.clone(), parse::socket_addr(addr)) else {
            return;
        };
        // Port 0 asks the system for a free port: never a clash.
        let overlaps = |a: &SocketAddr| {
            a.port() == addr.port()
                && addr.port() != 0
                && (a.ip() == addr.ip() || a.ip().is_unspecified() || addr.ip().is_unspecified())
        };
        if let Some((other, a)) = bound.iter().find(|(_, a)| overlaps(a)) {
            let message =
                format!("{addr} overlaps {other} ({a}); each listener needs its own port");
            self.err(path.clone(), message);
        }
        bound.push((path, addr));
    }

    fn certificates(&mut self, raw: &RawConfig) {
        let Some(tls) = &raw.tls else { return };
        let path = root().key("tls").key("certificates");
        for (i, pair) in tls.certificates.iter().enumerate() {
            for (field, file) in [("cert", &pair.cert), ("key", &pair.key)] {
                if file.as_os_str().is_empty() {
                    self.err(path.index(i).key(field), "empty file name");
                }
            }
        }
    }

    fn admin(&mut self, admin: &RawAdmin, env: Env<'_>) {
        let path = root().key("admin");
        if admin.token.is_some() && admin.token_env.is_some() {
            self.err(
                path.key("token_env"),
                "set `token` or `token_env`, not both",
            );
        }
        if admin.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            self.err(path.key("token"), "the token is empty");
        }
        if let Some(var) = admin.token_env.as_deref() {
            if !valid_env_name(var) {
                self.err(
                    path.key("token_env"),
                    format!("{var:?} is not an environment variable name"),
                );
            } else if resolve_token(admin, env).is_none() {
                // A token asked for but not found must not become an open admin API.
                self.err(
                    path.key("token_env"),
                    format!("the environment variable {var} is unset or empty: set it to the admin token"),
                );
                return;
            }
        }
        let listen = admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN);
        let Ok(addr) = parse::socket_addr(listen) else {
            return;
        };
        if !addr.ip().is_loopback() && resolve_token(admin, env).is_none() {
            self.err(path.key("listen"), format!("the admin listener {addr} is not on loopback and has no token: set `token` or `token_env`, or listen on 127.0.0.1"));
        }
    }

    fn proxy(&mut self, p: &RawProxy) {
        let path = root().key("proxy");
        let durations = [
            ("connect_timeout", &p.connect_timeout, true),
            ("request_timeout", &p.request_timeout, true),
            ("idle_timeout", &p.idle_timeout, true),
            ("header_read_timeout", &p.header_read_timeout, true),
            ("shutdown_grace", &p.shutdown_grace, false),
            ("upstream_idle_timeout", &p.upstream_idle_timeout, true),
        ];
        for (field, value, nonzero) in durations {
            self.duration(path.key(field), value.as_deref(), nonzero);
        }
        self.at_least_one(
            path.key("max_connections"),
            p.max_connections.map(|n| n as u64),
        );
    }

    fn pools(&mut self) {
        let path = root().key("pools");
        if self.pools.len() > MAX_ITEMS {
            self.err(path.clone(), format!("at most {MAX_ITEMS} pools"));
        }
        for (name, pool) in self.pools {
            let pool_path = path.key(name);
            if !parse::is_name(name) {
                self.err(
                    pool_path.clone(),
                    format!("invalid pool name {name:?}: use letters, digits, `_`, `.` and `-`"),
                );
            }
            self.servers(pool_path.key("servers"), &pool.servers);
            if let Some(health) = &pool.health {
                self.health(pool_path.key("health"), health);
            }
            if let Some(outlier) = &pool.outlier {
                self.outlier(pool_path.key("outlier"), outlier);
            }
            if let Some(tls) = &pool.tls {
                self.upstream_tls(pool_path.key("tls"), tls);
            }
        }
    }

    fn servers(&mut self, path: FieldPath, servers: &[RawServer]) {
        if servers.is_empty() {
            self.err(
                path,
                "the pool has no servers: give at least one, like [\"10.0.0.11:8080\"]",
            );
            return;
        }
        if servers.len() > MAX_ITEMS {
            self.err(
                path.clone(),
                format!("at most {MAX_ITEMS} servers in a pool"),
            );
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, server) in servers.iter().enumerate() {
            let (addr_path, weight_path) = match server {
                RawServer::Addr(_) => (path.index(i), path.index(i)),
                RawServer::Weighted(_) => (path.index(i).key("addr"), path.index(i).key("weight")),
            };
            if server.weight() == Some(0) {
                self.err(
                    weight_path,
                    "a server weight must be at least 1; to take a server out, drain or remove it",
                );
            }
            let Some(target) = self.result(addr_path.clone(), parse::server_target(server.addr()))
            else {
                continue;
            };
            if let Some(first) = seen.insert(target_key(&target), i) {
                self.err(
                    addr_path,
                    format!(
                        "duplicate server {:?} (also servers[{first}])",
                        server.addr()
                    ),
                );
            }
        }
    }

    fn health(&mut self, path: FieldPath, h: &RawHealth) {
        if let Some(p) = &h.path {
            let valid = p.starts_with('/') && p.parse::<http::uri::PathAndQuery>().is_ok();
            if !valid {
                self.err(path.key("path"), format!("invalid health check path {p:?}: it must start with \"/\", like \"/ready\""));
            }
        }
        self.duration(path.key("interval"), h.interval.as_deref(), true);
        self.duration(path.key("timeout"), h.timeout.as_deref(), true);
        self.at_least_one(path.key("healthy_threshold"), h.healthy_threshold);
        self.at_least_one(path.key("unhealthy_threshold"), h.unhealthy_threshold);
    }

    fn outlier(&mut self, path: FieldPath, o: &RawOutlier) {
        self.at_least_one(path.key("consecutive_failures"), o.consecutive_failures);
        self.duration(path.key("base_ejection"), o.base_ejection.as_deref(), true);
        if let Some(p) = o.max_ejection_percent.filter(|p| *p > 100) {
            self.err(
                path.key("max_ejection_percent"),
                format!("{p} is outside 0..=100"),
            );
        }
    }

    fn upstream_tls(&mut self, path: FieldPath, t: &RawUpstreamTls) {
        if t.cert.is_some() != t.key.is_some() {
            let missing = if t.cert.is_some() { "key" } else { "cert" };
            self.err(
                path.key(missing),
                "a client certificate needs both `cert` and `key`",
            );
        }
        if t.sni.as_deref().is_some_and(str::is_empty) {
            self.err(path.key("sni"), "empty server name");
        }
    }

    fn routes(&mut self, routes: &[RawRoute]) {
        let path = root().key("routes");
        if routes.len() > MAX_ITEMS {
            self.err(path.clone(), format!("at most {MAX_ITEMS} routes"));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            if let Some(first) = names.insert(&route.name, i) {
                let message = format!(
                    "duplicate route name {:?} (also routes[{first}])",
                    route.name
                );
                self.err(path.index(i).key("name"), message);
            }
            self.route(path.index(i), route);
        }
    }

    fn route(&mut self, path: FieldPath, r: &RawRoute) {
        if !parse::is_name(&r.name) {
            self.err(path.key("name"), format!("invalid route name {:?}: use letters, digits, `_`, `.` and `-` (it appears in admin API URLs)", r.name));
        }
        for (i, host) in r.hosts.iter().enumerate() {
            self.result(path.key("hosts").index(i), parse::host_pattern(host));
        }
        if let Some(prefix) = &r.path_prefix {
            let valid = prefix.starts_with('/')
                && !prefix.contains(|c: char| c.is_whitespace() || c == '?' || c == '#');
            if !valid {
                self.err(path.key("path_prefix"), format!("invalid path_prefix {prefix:?}: a path that starts with \"/\", like \"/api\""));
            }
        }
        self.split(path.key("split"), &r.split);
        if let Some(key) = &r.hash_key {
            self.result(path.key("hash_key"), parse::hash_key(key));
        }
        if let Some(sticky) = &r.sticky {
            self.sticky(path.key("sticky"), sticky);
        }
        for (i, pin) in r.pin.iter().enumerate() {
            self.pin(path.key("pin").index(i), pin);
        }
        if let Some(mirror) = &r.mirror {
            self.mirror(path.key("mirror"), mirror);
        }
        if let Some(rollout) = &r.rollout {
            self.rollout(path.key("rollout"), rollout, &r.split);
        }
    }

    fn split(&mut self, path: FieldPath, split: &IndexMap<String, u32>) {
        if split.is_empty() {
            self.err(
                path,
                "the split is empty: give at least one pool a weight, like { blue = 100 }",
            );
            return;
        }
        for pool in split.keys() {
            self.known_pool(path.key(pool), pool);
        }
        let total: u64 = split.values().map(|w| u64::from(*w)).sum();
        if total == 0 {
            self.err(
                path,
                "every weight in the split is 0: at least one pool needs a weight above 0",
            );
        } else if total > u64::from(u32::MAX) {
            self.err(path, "the weights add up to more than 4294967295; they are relative, use smaller numbers");
        }
    }

    fn sticky(&mut self, path: FieldPath, s: &RawSticky) {
        self.result(path.key("cookie"), parse::cookie_name(&s.cookie));
        let Some(max_age) = &s.max_age else { return };
        match parse::duration(max_age) {
            Ok(d) if d.as_secs() == 0 => self.err(
                path.key("max_age"),
                format!("{max_age:?} must be at least 1s (Max-Age counts whole seconds)"),
            ),
            Ok(_) => {}
            Err(m) => self.err(path.key("max_age"), m),
        }
    }

    fn pin(&mut self, path: FieldPath, pin: &RawPin) {
        let kinds = [
            pin.header.is_some(),
            pin.cookie.is_some(),
            pin.source.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => self.err(path.clone(), "a pin needs one of `header`, `cookie` or `source`"),
            1 => {}
            _ => self.err(path.clone(), "a pin takes only one of `header`, `cookie` or `source`; write one [[routes.pin]] per rule"),
        }
        if let Some(header) = &pin.header {
            self.result(path.key("header"), parse::header_name(header));
        }
        if let Some(cookie) = &pin.cookie {
            self.result(path.key("cookie"), parse::cookie_name(cookie));
        }
        if let Some(sources) = &pin.source {
            if sources.is_empty() {
                self.err(
                    path.key("source"),
                    "the source list is empty: give at least one CIDR, like \"10.1.0.0/16\"",
                );
            }
            for (i, cidr) in sources.iter().enumerate() {
                self.result(path.key("source").index(i), parse::cidr(cidr));
            }
            if pin.equals.is_some() {
                self.err(
                    path.key("equals"),
                    "`equals` applies to `header` and `cookie` pins, not to `source`",
                );
            }
        }
        self.known_pool(path.key("pool"), &pin.pool);
    }

    fn mirror(&mut self, path: FieldPath, m: &RawMirror) {
        self.known_pool(path.key("pool"), &m.pool);
        if let Some(p) = m.percent.filter(|p| *p > 100) {
            self.err(path.key("percent"), format!("{p} is outside 0..=100"));
        }
        if let Some(size) = &m.max_body {
            self.result(path.key("max_body"), parse::size(size));
        }
        if m.max_in_flight == Some(0) {
            self.err(
                path.key("max_in_flight"),
                "must be at least 1 (to stop mirroring, set percent = 0)",
            );
        }
    }

    fn rollout(&mut self, path: FieldPath, r: &RawRollout, split: &IndexMap<String, u32>) {
        self.known_pool(path.key("stable"), &r.stable);
        self.known_pool(path.key("canary"), &r.canary);
        if r.stable == r.canary {
            self.err(
                path.key("canary"),
                "the canary must differ from the stable pool",
            );
        }
        for (field, pool) in [("stable", &r.stable), ("canary", &r.canary)] {
            if self.pools.contains_key(pool) && !split.contains_key(pool) {
                self.err(
                    path.key(field),
                    format!("pool {pool:?} is not in this route's split; add it, like {pool} = 0"),
                );
            }
        }
        self.steps(path.key("steps"), &r.steps);
        self.duration(path.key("interval"), r.interval.as_deref(), true);
        self.duration(path.key("max_p99"), r.max_p99.as_deref(), true);
        if let Some(rate) = r.max_error_rate.filter(|r| !(0.0..=1.0).contains(r)) {
            self.err(
                path.key("max_error_rate"),
                format!("{rate} is outside 0..=1 (a share: 0.01 is 1%)"),
            );
        }
        if let Some(c) = &r.compare {
            let path = path.key("compare");
            if let Some(v) = c.max_error_increase.filter(|v| !(0.0..=1.0).contains(v)) {
                self.err(
                    path.key("max_error_increase"),
                    format!("{v} is outside 0..=1 (a share: 0.005 is half a percent)"),
                );
            }
            if let Some(v) = c.max_p99_ratio.filter(|v| !(v.is_finite() && *v >= 1.0)) {
                self.err(
                    path.key("max_p99_ratio"),
                    format!("{v} is below 1 (1.5 lets the canary's p99 be 1.5 x stable's)"),
                );
            }
            if let Some(v) = c.confidence.filter(|v| !(0.5..1.0).contains(v)) {
                self.err(
                    path.key("confidence"),
                    format!("{v} is outside 0.5..1 (like 0.95)"),
                );
            }
        }
    }

    fn steps(&mut self, path: FieldPath, steps: &[u32]) {
        if steps.is_empty() {
            self.err(
                path,
                "no steps: give canary percents, like [5, 20, 50, 100]",
            );
            return;
        }
        for (i, step) in steps.iter().enumerate() {
            if !(1..=100).contains(step) {
                self.err(path.index(i), format!("step {step} is outside 1..=100"));
            } else if i > 0 && *step <= steps[i - 1] {
                self.err(
                    path.index(i),
                    format!("steps must increase: {step} follows {}", steps[i - 1]),
                );
            }
        }
    }
}

/// What makes two servers the same: the IP socket address, or the lower-case name and port.
fn target_key(target: &Target) -> String {
    match target {
        Target::Addr(a) => a.to_string(),
        Target::Name { host, port } => {
            let host = host.strip_suffix('.').unwrap_or(host);
            format!("{}:{port}", host.to_ascii_lowercase())
        }
    }
}

/// A name `std::env::var` accepts.
pub(crate) fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}
