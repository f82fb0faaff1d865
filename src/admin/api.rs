//! The admin JSON API: one hyper HTTP/1.1 connection task per client, and the endpoints of
//! SPEC.md's "Admin API" (auth, versions and bodies are in `http`).
//! Every change goes through `Control::apply` on a blocking thread; nothing here changes state
//! itself, and nothing a client sends can panic the server.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::views::View;
use super::wire::{
    authorized, browser_allowed, content_type, json_response, one_line, read_body, refuse,
    ApiError, FieldError, IfMatch,
};
use super::{probes, Admin};
use crate::config::{self, RawConfig};
use crate::control::{Change, RolloutAction, RolloutState};

pub use super::wire::AdminBody;

/// A request head must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head buffered.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves the admin listener until the process ends: it keeps answering while the proxy
/// drains, so that `/readyz` can say so.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    handed_over: tokio::sync::watch::Receiver<bool>,
) {
    let handed_over = crate::handover::handed_over(handed_over);
    tokio::pin!(handed_over);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut accept_errors = crate::telemetry::Throttled::new(Duration::from_secs(1));
    let connections = crate::metrics::connections("admin");
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut handed_over => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let admin = Arc::clone(&admin);
                let builder = builder.clone();
                let open = OpenConnection::new(&connections);
                tokio::spawn(async move {
                    let _open = open;
                    let service = service_fn(move |req: Request<Incoming>| {
                        let admin = Arc::clone(&admin);
                        async move { Ok::<_, Infallible>(handle(&admin, req).await) }
                    });
                    if let Err(e) = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(client = %peer, error = %e, "admin connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning, and log
                // at a bounded rate.
                if let Some(unlogged) = accept_errors.hit(tokio::time::Instant::now()) {
                    tracing::warn!(error = %e, unlogged, "admin accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts an admin connection in `veer_connections_active{listener="admin"}` while alive.
struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    fn new(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Answers one request.
pub async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<AdminBody> {
    let path = req.uri().path();
    // Liveness and readiness answer any prober; everything else is closed to browsers.
    if !matches!(path, "/healthz" | "/readyz") {
        let token = admin.token.is_some();
        if let Err(e) = browser_allowed(admin.addr, token, req.headers()) {
            return refuse(e, req.into_body()).await;
        }
    }
    if let Some(resp) = probes::handle(admin, req.method(), req.uri().path()) {
        return resp;
    }
    if !authorized(admin.token.as_deref(), req.headers()) {
        return refuse(ApiError::unauthorized(), req.into_body()).await;
    }
    let endpoint = match Endpoint::parse(req.uri().path()) {
        Ok(e) => e,
        Err(e) => return refuse(e, req.into_body()).await,
    };
    let method = req.method().clone();
    if !endpoint.allows(&method) {
        let e = ApiError::method_not_allowed(endpoint.allow());
        return refuse(e, req.into_body()).await;
    }
    if endpoint.is_change(&method) {
        let result = change(admin, endpoint, req).await;
        crate::metrics::config_reload("api", result.is_ok());
        return result.unwrap_or_else(ApiError::into_response);
    }
    let view = View::take(&admin.control);
    match endpoint {
        Endpoint::Config => json_response(
            StatusCode::OK,
            &json!({"version": view.version, "config": view.config()}),
            Some(view.version),
        ),
        Endpoint::Routes => json_response(
            StatusCode::OK,
            &json!({"version": view.version, "routes": view.routes()}),
            Some(view.version),
        ),
        Endpoint::Route(name) => match view.route(&name) {
            Some(route) => json_response(
                StatusCode::OK,
                &json!({"version": view.version, "route": route}),
                Some(view.version),
            ),
            None => ApiError::not_found(format!("no route named {name:?}")).into_response(),
        },
        Endpoint::Pools => json_response(
            StatusCode::OK,
            &json!({"version": view.version, "pools": view.pools()}),
            Some(view.version),
        ),
        Endpoint::Stats => json_response(
            StatusCode::OK,
            &json!({"version": view.version, "routes": view.stats()}),
            Some(view.version),
        ),
        _ => ApiError::not_found("not found").into_response(),
    }
}

/// A change endpoint: If-Match, body, `Control::apply`, and the answer.
async fn change(
    admin: &Admin,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<AdminBody>, ApiError> {
    let (parts, body) = req.into_parts();
    // The body first, so that an early refusal never leaves it unread on the connection.
    let body = read_body(body).await?;
    let if_match = IfMatch::parse(&parts.headers)?;
    let content_type = content_type(&parts.headers);
    let expect = if_match.version();
    let (change, route) = match endpoint {
        Endpoint::Config => {
            let (raw, body_version) = parse_config(&body, content_type.as_deref())?;
            let expect = match if_match {
                IfMatch::Absent => body_version,
                _ => expect,
            };
            let version = apply(admin, Change::Replace(Box::new(raw)), expect).await?;
            let out = json!({"version": version});
            return Ok(json_response(StatusCode::OK, &out, Some(version)));
        }
        Endpoint::Split(route) => {
            let weights = split_body(&body)?;
            let change = Change::Split {
                route: route.clone(),
                weights,
            };
            (change, route)
        }
        Endpoint::Promote(route) => {
            let pool = promote_body(&body)?;
            let change = Change::Promote {
                route: route.clone(),
                pool,
            };
            (change, route)
        }
        Endpoint::Rollback(route) => (
            Change::Rollback {
                route: route.clone(),
            },
            route,
        ),
        Endpoint::Rollout(route, action) => (
            Change::Rollout {
                route: route.clone(),
                action,
            },
            route,
        ),
        Endpoint::Drain { pool, addr, drain } => {
            let version = apply(admin, Change::Drain { pool, addr, drain }, expect).await?;
            return Ok(json_response(
                StatusCode::OK,
                &json!({"version": version}),
                Some(version),
            ));
        }
        Endpoint::Routes | Endpoint::Route(_) | Endpoint::Pools | Endpoint::Stats => {
            return Err(ApiError::not_found("not found"))
        }
    };
    let operator = !matches!(change, Change::Rollout { .. });
    let was_progressing = matches!(
        rollout_state(&admin.control, &route),
        Some(RolloutState::Progressing { .. })
    );
    let version = apply(admin, change, expect).await?;
    let view = View::take(&admin.control);
    let mut out = json!({"version": version});
    if let (Some(route), Value::Object(map)) = (view.route(&route), &mut out) {
        map.insert("route".into(), route);
    }
    if let (true, true, Some(RolloutState::Paused { step }), Value::Object(map)) = (
        operator,
        was_progressing,
        rollout_state(&admin.control, &route),
        &mut out,
    ) {
        map.insert("rollout_paused".into(), Value::Bool(true));
        map.insert(
            "note".into(),
            Value::from(format!(
                "this change paused the rollout of {route} at step {step}; `veer ctl rollout {route} resume` takes it up again with the step's weights"
            )),
        );
    }
    Ok(json_response(StatusCode::OK, &out, Some(version)))
}

/// Runs `change` through the change path on a blocking thread (it fsyncs). A draining
/// process takes no more changes: they belong to the process that replaces it, which may
/// already share this port.
async fn apply(admin: &Admin, change: Change, expect: Option<u64>) -> Result<u64, ApiError> {
    if *admin.draining.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "veer is draining and takes no more changes; send them to the process that replaces it",
        ));
    }
    let control = Arc::clone(&admin.control);
    let what = describe(&change);
    match tokio::task::spawn_blocking(move || control.apply(change, expect)).await {
        Ok(Ok(version)) => {
            tracing::info!(change = %what, version, "admin API change applied");
            Ok(version)
        }
        Ok(Err(e)) => {
            tracing::info!(change = %what, error = %one_line(&e.to_string()), "admin API change refused");
            Err(ApiError::from_control(e, admin.control.version()))
        }
        Err(e) => {
            tracing::error!(change = %what, error = %e, "admin API change failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the change could not be applied",
            ))
        }
    }
}

/// Where `route`'s rollout stands now, if it has one.
fn rollout_state(control: &crate::control::Control, route: &str) -> Option<RolloutState> {
    control
        .published()
        .runtime
        .routes
        .get(route)
        .and_then(|r| r.rollout.as_ref())
        .map(|r| r.state.clone())
}

/// A short description of a change for the log.
fn describe(change: &Change) -> String {
    match change {
        Change::Split { route, weights } => format!("split {route} {weights:?}"),
        Change::Promote { route, pool } => format!("promote {route} to {pool}"),
        Change::Rollback { route } => format!("rollback {route}"),
        Change::Drain { pool, addr, drain } => {
            let verb = if *drain { "drain" } else { "undrain" };
            format!("{verb} {pool}/{addr}")
        }
        Change::Rollout { route, action } => format!("rollout {action:?} {route}").to_lowercase(),
        Change::Replace(_) => "replace config".to_string(),
        Change::RolloutStep { route, step, .. } => format!("rollout step {step} of {route}"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    pool: String,
}

/// The body of `PUT …/split`: pool names to weights.
pub(super) fn split_body(body: &[u8]) -> Result<IndexMap<String, u32>, ApiError> {
    parse_json(
        body,
        "the body must be a JSON object of pool names to weights, like {\"blue\": 80, \"green\": 20}",
    )
}

/// The body of `POST …/promote`: the pool's name.
pub(super) fn promote_body(body: &[u8]) -> Result<String, ApiError> {
    let PromoteBody { pool } = parse_json(
        body,
        "the body must be a JSON object naming the pool, like {\"pool\": \"green\"}",
    )?;
    Ok(pool)
}

/// Parses a JSON body of the shape `T`; anything else is a `400`.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("{shape}: {}", one_line(&e.to_string()))))
}

/// The body of `PUT /api/v1/config`: TOML or JSON (bare, or `{"version", "config"}` as GET
/// returns it). Returns the config and the version the body names, if any.
pub(super) fn parse_config(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(RawConfig, Option<u64>), ApiError> {
    if matches!(
        content_type,
        Some("application/toml" | "text/toml" | "text/x-toml")
    ) {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the TOML body is not UTF-8"))?;
        // Not TOML at all is a malformed body (400); TOML that is not a valid config is 422.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(ApiError::bad_request(format!(
                "the body is not TOML: {}",
                one_line(e.message())
            )));
        }
        let compiled =
            config::from_toml(text, "<request body>").map_err(ApiError::invalid_config)?;
        return Ok((compiled.raw, None));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON: {}",
            one_line(&e.to_string())
        ))
    })?;
    let (config, version) = match value {
        Value::Object(mut map)
            if map.contains_key("config")
                && map.keys().all(|k| k == "config" || k == "version") =>
        {
            let version = match map.get("version") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().ok_or_else(|| {
                    ApiError::bad_request("\"version\" must be a non-negative integer")
                })?),
            };
            (map.remove("config").unwrap_or(Value::Null), version)
        }
        other => (other, None),
    };
    let raw: RawConfig = serde_json::from_value(config).map_err(|e| {
        ApiError::invalid(
            "the config does not have the expected shape",
            vec![FieldError {
                path: String::new(),
                message: one_line(&e.to_string()),
                location: None,
            }],
        )
    })?;
    Ok((raw, version))
}

/// The API endpoints, with their path parameters decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Config,
    Routes,
    Route(String),
    Split(String),
    Promote(String),
    Rollback(String),
    Rollout(String, RolloutAction),
    Pools,
    Stats,
    Drain {
        pool: String,
        addr: String,
        drain: bool,
    },
}

impl Endpoint {
    fn parse(path: &str) -> Result<Self, ApiError> {
        let not_found = || ApiError::not_found(format!("no such endpoint: {path}"));
        let rest = path.strip_prefix("/api/v1/").ok_or_else(not_found)?;
        let raw: Vec<&str> = rest.split('/').collect();
        let mut segs = Vec::with_capacity(raw.len());
        for seg in raw {
            if seg.is_empty() {
                return Err(not_found());
            }
            segs.push(percent_decode(seg).ok_or_else(not_found)?);
        }
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let endpoint = match segs.as_slice() {
            ["config"] => Endpoint::Config,
            ["routes"] => Endpoint::Routes,
            ["routes", route] => Endpoint::Route(route.to_string()),
            ["routes", route, "split"] => Endpoint::Split(route.to_string()),
            ["routes", route, "promote"] => Endpoint::Promote(route.to_string()),
            ["routes", route, "rollback"] => Endpoint::Rollback(route.to_string()),
            ["routes", route, "rollout", action] => {
                let action = match *action {
                    "start" => RolloutAction::Start,
                    "pause" => RolloutAction::Pause,
                    "resume" => RolloutAction::Resume,
                    "abort" => RolloutAction::Abort,
                    other => {
                        return Err(ApiError::not_found(format!(
                            "no rollout action {other:?}: use start, pause, resume or abort"
                        )))
                    }
                };
                Endpoint::Rollout(route.to_string(), action)
            }
            ["pools"] => Endpoint::Pools,
            ["stats"] => Endpoint::Stats,
            ["pools", pool, "servers", addr, verb @ ("drain" | "undrain")] => Endpoint::Drain {
                pool: pool.to_string(),
                addr: addr.to_string(),
                drain: *verb == "drain",
            },
            _ => return Err(not_found()),
        };
        Ok(endpoint)
    }

    /// The `Allow` header's value.
    fn allow(&self) -> &'static str {
        match self {
            Endpoint::Config => "GET, HEAD, PUT",
            Endpoint::Routes | Endpoint::Route(_) | Endpoint::Pools | Endpoint::Stats => {
                "GET, HEAD"
            }
            Endpoint::Split(_) => "PUT",
            Endpoint::Promote(_)
            | Endpoint::Rollback(_)
            | Endpoint::Rollout(..)
            | Endpoint::Drain { .. } => "POST",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        let reading = *method == Method::GET || *method == Method::HEAD;
        match self {
            Endpoint::Config => reading || *method == Method::PUT,
            Endpoint::Routes | Endpoint::Route(_) | Endpoint::Pools | Endpoint::Stats => reading,
            Endpoint::Split(_) => *method == Method::PUT,
            Endpoint::Promote(_)
            | Endpoint::Rollback(_)
            | Endpoint::Rollout(..)
            | Endpoint::Drain { .. } => *method == Method::POST,
        }
    }

    /// Whether an allowed request is a change: `PUT /api/v1/config` and every endpoint but
    /// the reads.
    fn is_change(&self, method: &Method) -> bool {
        match self {
            Endpoint::Config => *method == Method::PUT,
            Endpoint::Routes | Endpoint::Route(_) | Endpoint::Pools | Endpoint::Stats => false,
            _ => true,
        }
    }
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8. A `%` not followed by two hex
/// digits stays as it is.
pub(super) fn percent_decode(seg: &str) -> Option<String> {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode() {
        assert_eq!(
            Endpoint::parse("/api/v1/config").ok(),
            Some(Endpoint::Config)
        );
        assert_eq!(
            Endpoint::parse("/api/v1/pools/blue/servers/10.0.0.1%3A8080/drain").ok(),
            Some(Endpoint::Drain {
                pool: "blue".into(),
                addr: "10.0.0.1:8080".into(),
                drain: true
            })
        );
        assert_eq!(
            Endpoint::parse("/api/v1/pools/b/servers/%5B::1%5D:80/undrain").ok(),
            Some(Endpoint::Drain {
                pool: "b".into(),
                addr: "[::1]:80".into(),
                drain: false
            })
        );
        assert_eq!(
            Endpoint::parse("/api/v1/routes/web/rollout/pause").ok(),
            Some(Endpoint::Rollout("web".into(), RolloutAction::Pause))
        );
        for bad in [
            "/api/v1/",
            "/api/v1/routes/",
            "/api/v1/routes//split",
            "/api/v1/routes/web/rollout/jump",
            "/api/v1/nope",
            "/api/v2/config",
            "/api/v1/routes/%FF",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(percent_decode("a%zzb%4").as_deref(), Some("a%zzb%4"));
        assert_eq!(percent_decode("%e2%9c%93").as_deref(), Some("\u{2713}"));
    }

    #[test]
    fn config_bodies() {
        let bare = br#"{"pools": {"a": {"servers": ["127.0.0.1:1"]}}, "routes": [{"name": "r", "split": {"a": 1}}]}"#;
        let (raw, v) = parse_config(bare, None).unwrap();
        assert_eq!(raw.routes[0].name, "r");
        assert_eq!(v, None);
        let wrapped =
            br#"{"version": 4, "config": {"pools": {"a": {"servers": ["127.0.0.1:1"]}}}}"#;
        let (raw, v) = parse_config(wrapped, Some("application/json")).unwrap();
        assert!(raw.pools.contains_key("a"));
        assert_eq!(v, Some(4));
        let e = parse_config(b"{nope", None).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_config(br#"{"poolz": {}}"#, None).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = parse_config(b"[pools", Some("application/toml")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_config(b"[pools.a]\nservers = []", Some("application/toml")).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.errors[0].location.is_some());
    }
}
