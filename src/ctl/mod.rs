//! `veer ctl`: the admin API's command-line client. Parses its arguments (clap, flattened into
//! the `veer` command), sends one or two requests, and prints what the API answered: a table or
//! a line for people, or the JSON body with `--json` for scripts.
//!
//! Exit codes: 0 done, 1 refused (any 4xx/5xx answer) or unreachable, 2 usage.

mod client;
mod render;

use std::io::Write as _;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use hyper::{Method, StatusCode};
use serde_json::Value;

pub use client::{segment, AdminUrl};
use client::{Answer, Client, SendError};

/// Where `veer ctl` looks for the admin API without `--admin` or `$VEER_ADMIN`.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9901";

const EXAMPLES: &str = "\
Examples:
  veer ctl status
  veer ctl split web blue=80 green=20
  veer ctl --admin 10.0.0.5:9901 --token \"$TOKEN\" promote web green
  veer ctl rollout web start --json

Exit status: 0 done, 1 refused by the admin API or unreachable, 2 usage error.";

/// `veer ctl [--admin URL] [--token T] [--json] SUBCOMMAND`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct CtlArgs {
    /// The admin API: a URL or host:port.
    #[arg(
        long,
        global = true,
        env = "VEER_ADMIN",
        default_value = DEFAULT_ADMIN,
        value_name = "URL",
        value_parser = AdminUrl::parse
    )]
    pub admin: AdminUrl,

    /// The admin token, sent as `Authorization: Bearer <T>`.
    #[arg(
        long,
        global = true,
        env = "VEER_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "T"
    )]
    pub token: Option<String>,

    /// Print the admin API's JSON answer (pretty-printed) instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Give up on the admin API after this long (e.g. "500ms", "10s").
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What `veer ctl` asks the admin API to do.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Show every route (split, rollout) and every pool's servers (health, drain, in-flight).
    #[command(
        after_help = "Example:\n  veer ctl status\n  veer ctl status --json | jq '.routes[].split'"
    )]
    Status,

    /// Set a route's weights; pools left out get weight 0.
    #[command(after_help = "Example:\n  veer ctl split web blue=80 green=20\n\n\
        Weights are relative (blue=4 green=1 is 80/20). The route's pools keep their order, so\n\
        raising the last pool's weight only moves users into it.")]
    Split {
        /// The route's name.
        route: String,
        /// A pool and its weight, e.g. green=20; one or more.
        #[arg(required = true, value_name = "POOL=W", value_parser = parse_weight)]
        weights: Vec<(String, u32)>,
        #[command(flatten)]
        guard: Guard,
    },

    /// Send 100% of a route to one pool (a blue/green switch).
    #[command(after_help = "Example:\n  veer ctl promote web green")]
    Promote {
        /// The route's name.
        route: String,
        /// The pool that gets every request.
        pool: String,
        #[command(flatten)]
        guard: Guard,
    },

    /// Send 100% of a route back to its rollout's stable pool (or its split's first pool).
    #[command(after_help = "Example:\n  veer ctl rollback web")]
    Rollback {
        /// The route's name.
        route: String,
        #[command(flatten)]
        guard: Guard,
    },

    /// Stop sending new requests to one server; its requests in flight finish.
    #[command(
        after_help = "Example:\n  veer ctl drain blue 10.0.0.11:8080\n  veer ctl status   # wait until its IN-FLIGHT is 0"
    )]
    Drain {
        /// The pool's name.
        pool: String,
        /// The server's address as configured (host:port).
        server: String,
        #[command(flatten)]
        guard: Guard,
    },

    /// Send new requests to a drained server again.
    #[command(after_help = "Example:\n  veer ctl undrain blue 10.0.0.11:8080")]
    Undrain {
        /// The pool's name.
        pool: String,
        /// The server's address as configured (host:port).
        server: String,
        #[command(flatten)]
        guard: Guard,
    },

    /// Drive a route's progressive rollout ([routes.rollout] in the config).
    #[command(after_help = "Example:\n  veer ctl rollout web start\n  veer ctl rollout web pause")]
    Rollout {
        /// The route's name.
        route: String,
        /// What to do.
        action: RolloutAction,
        #[command(flatten)]
        guard: Guard,
    },
}

/// Optimistic concurrency for a change.
#[derive(Debug, Clone, Copy, Args)]
pub struct Guard {
    /// Apply only if the config is still at this version (sent as `If-Match: "N"`).
    #[arg(long, value_name = "N")]
    pub if_match: Option<u64>,
}

/// A rollout action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RolloutAction {
    /// Put the canary at the plan's first step.
    Start,
    /// Freeze at the current step.
    Pause,
    /// Go on from a paused step.
    Resume,
    /// Roll back: the canary's weight to 0.
    Abort,
}

impl RolloutAction {
    fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Start => "start",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
        }
    }
}

fn parse_weight(text: &str) -> Result<(String, u32), String> {
    let Some((pool, weight)) = text.split_once('=') else {
        return Err(format!("{text:?} is not POOL=W (e.g. green=20)"));
    };
    let pool = pool.trim();
    if pool.is_empty() {
        return Err(format!(
            "{text:?} names no pool: expected POOL=W (e.g. green=20)"
        ));
    }
    let weight = weight
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{text:?}: the weight must be a whole number 0 or more"))?;
    Ok((pool.to_string(), weight))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    if d.is_zero() {
        return Err("the timeout must be more than 0".into());
    }
    Ok(d)
}

/// Why `veer ctl` did not succeed.
#[derive(Debug)]
enum Failure {
    /// Bad arguments that clap could not see (exit 2).
    Usage(String),
    /// No answer from the admin API (exit 1).
    Unreachable(String),
    /// The admin API answered 4xx/5xx (exit 1).
    Refused {
        answer: Answer,
        if_match: Option<u64>,
    },
    /// An answer `veer ctl` cannot read (exit 1).
    BadAnswer(String),
}

impl Failure {
    fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) => 2,
            _ => 1,
        }
    }

    fn message(&self, admin: &AdminUrl) -> String {
        match self {
            Failure::Usage(m) => m.clone(),
            Failure::Unreachable(reason) => {
                format!("cannot reach the admin API at {admin}: {reason}")
            }
            Failure::BadAnswer(m) => {
                format!("unexpected answer from the admin API at {admin}: {m}")
            }
            Failure::Refused { answer, if_match } => refusal(answer, *if_match),
        }
    }
}

/// The message for a 4xx/5xx answer.
fn refusal(answer: &Answer, if_match: Option<u64>) -> String {
    let code = answer.status.as_u16();
    let server = render::error_message(&answer.body);
    match answer.status {
        StatusCode::UNAUTHORIZED => {
            "the admin API refused the token (401): set --token or $VEER_ADMIN_TOKEN".to_string()
        }
        StatusCode::PRECONDITION_FAILED => {
            let read = match if_match {
                Some(n) => format!("version {n} was read"),
                None => "it was read".to_string(),
            };
            let now = answer
                .etag
                .map(|v| format!("it is now at version {v} and "))
                .unwrap_or_default();
            format!(
                "the config changed since {read} (412): {now}nothing was applied; \
                 read it again (veer ctl status) and try again"
            )
        }
        StatusCode::UNPROCESSABLE_ENTITY => {
            let errors = render::error_list(&answer.body);
            if errors.is_empty() {
                format!(
                    "invalid change: {}",
                    server.unwrap_or_else(|| "the admin API gave no reason".into())
                )
            } else {
                format!("invalid change:\n{}", errors.join("\n"))
            }
        }
        status => {
            let reason = server
                .or_else(|| status.canonical_reason().map(str::to_string))
                .unwrap_or_else(|| "refused".to_string());
            format!("{reason} ({code})")
        }
    }
}

/// Runs `veer ctl`; returns the process exit code.
pub fn main(args: CtlArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("veer ctl: cannot start the runtime: {e}");
            return 1;
        }
    };
    let client = Client::new(args.admin.clone(), args.token.clone());
    let timeout = args.timeout;
    let result = runtime.block_on(async {
        match tokio::time::timeout(timeout, run(&client, &args)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Unreachable(format!(
                "no answer within {}; a change may still have been applied: check with `veer ctl status`",
                humantime::format_duration(timeout)
            ))),
        }
    });
    match result {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            // A closed stdout (`| head`) is not an error of the change, which is done.
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
            0
        }
        Err(failure) => {
            eprintln!("veer ctl: {}", failure.message(&args.admin));
            failure.exit_code()
        }
    }
}

/// Does what `args` asks; returns what to print.
async fn run(client: &Client, args: &CtlArgs) -> Result<String, Failure> {
    let json = args.json;
    match &args.command {
        CtlCommand::Status => status(client, json).await,
        CtlCommand::Split {
            route,
            weights,
            guard,
        } => {
            let mut body = serde_json::Map::new();
            for (pool, weight) in weights {
                if body.insert(pool.clone(), Value::from(*weight)).is_some() {
                    return Err(Failure::Usage(format!(
                        "pool {pool:?} is given twice; give each pool once"
                    )));
                }
            }
            let path = format!("/api/v1/routes/{}/split", segment(route));
            let answer =
                change(client, Method::PUT, &path, Some(Value::Object(body)), guard).await?;
            route_answer(&answer, route, json)
        }
        CtlCommand::Promote { route, pool, guard } => {
            let path = format!("/api/v1/routes/{}/promote", segment(route));
            let body = serde_json::json!({ "pool": pool });
            let answer = change(client, Method::POST, &path, Some(body), guard).await?;
            route_answer(&answer, route, json)
        }
        CtlCommand::Rollback { route, guard } => {
            let path = format!("/api/v1/routes/{}/rollback", segment(route));
            let answer = change(client, Method::POST, &path, None, guard).await?;
            route_answer(&answer, route, json)
        }
        CtlCommand::Rollout {
            route,
            action,
            guard,
        } => {
            let path = format!(
                "/api/v1/routes/{}/rollout/{}",
                segment(route),
                action.as_str()
            );
            let answer = change(client, Method::POST, &path, None, guard).await?;
            route_answer(&answer, route, json)
        }
        CtlCommand::Drain {
            pool,
            server,
            guard,
        } => drain(client, pool, server, true, guard, json).await,
        CtlCommand::Undrain {
            pool,
            server,
            guard,
        } => drain(client, pool, server, false, guard, json).await,
    }
}

/// Sends a request; an answer other than 2xx is a refusal.
async fn request(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<u64>,
) -> Result<Answer, Failure> {
    let answer = client
        .send(method, path, body.as_ref(), if_match)
        .await
        .map_err(|e| match e {
            SendError::Request(m) => Failure::Usage(m),
            SendError::Unreachable(m) => Failure::Unreachable(m),
        })?;
    if !answer.status.is_success() {
        return Err(Failure::Refused { answer, if_match });
    }
    Ok(answer)
}

async fn change(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
    guard: &Guard,
) -> Result<Answer, Failure> {
    request(client, method, path, body, guard.if_match).await
}

/// The answer's body as JSON.
fn json_body(answer: &Answer) -> Result<Value, Failure> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        Failure::BadAnswer(format!(
            "{} with a body that is not JSON ({e}); is --admin the admin listener?",
            answer.status.as_u16()
        ))
    })
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Failure> {
    serde_json::from_value(value).map_err(|e| Failure::BadAnswer(format!("unexpected JSON: {e}")))
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

fn route_answer(answer: &Answer, route: &str, json: bool) -> Result<String, Failure> {
    let value = json_body(answer)?;
    if json {
        return Ok(pretty(&value));
    }
    let body: render::RouteBody = typed(value)?;
    Ok(render::route_change(&body, route))
}

async fn drain(
    client: &Client,
    pool: &str,
    server: &str,
    on: bool,
    guard: &Guard,
    json: bool,
) -> Result<String, Failure> {
    let path = format!(
        "/api/v1/pools/{}/servers/{}/{}",
        segment(pool),
        segment(server),
        if on { "drain" } else { "undrain" }
    );
    let answer = change(client, Method::POST, &path, None, guard).await?;
    let value = json_body(&answer)?;
    if json {
        return Ok(pretty(&value));
    }
    let body: render::VersionBody = typed(value)?;
    Ok(render::drain_change(pool, server, on, body.version))
}

/// `status`: routes and pools read at the same version (read again, a few times, when a change
/// slips in between the two requests).
async fn status(client: &Client, json: bool) -> Result<String, Failure> {
    let mut attempt = 0;
    let (routes, pools) = loop {
        attempt += 1;
        let routes = request(client, Method::GET, "/api/v1/routes", None, None).await?;
        let pools = request(client, Method::GET, "/api/v1/pools", None, None).await?;
        let routes = json_body(&routes)?;
        let pools = json_body(&pools)?;
        let same = routes.get("version") == pools.get("version");
        if same || attempt >= 3 {
            break (routes, pools);
        }
    };
    if json {
        let mut merged = serde_json::Map::new();
        if let Some(v) = routes.get("version") {
            merged.insert("version".into(), v.clone());
        }
        merged.insert(
            "routes".into(),
            routes
                .get("routes")
                .cloned()
                .unwrap_or(Value::Array(Vec::new())),
        );
        merged.insert(
            "pools".into(),
            pools
                .get("pools")
                .cloned()
                .unwrap_or(Value::Array(Vec::new())),
        );
        return Ok(pretty(&Value::Object(merged)));
    }
    let routes: render::RoutesBody = typed(routes)?;
    let pools: render::PoolsBody = typed(pools)?;
    Ok(render::status(&client.admin.to_string(), &routes, &pools))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse() {
        assert_eq!(parse_weight("green=20"), Ok(("green".to_string(), 20)));
        assert_eq!(parse_weight("blue=0"), Ok(("blue".to_string(), 0)));
        assert!(parse_weight("green").is_err());
        assert!(parse_weight("=5").is_err());
        assert!(parse_weight("green=-1").is_err());
        assert!(parse_weight("green=x").is_err());
        assert!(parse_weight("green=").is_err());
    }

    fn answer(status: u16, body: &str, etag: Option<u64>) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            etag,
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn refusal_messages() {
        assert_eq!(
            refusal(&answer(401, r#"{"error":"unauthorized"}"#, None), None),
            "the admin API refused the token (401): set --token or $VEER_ADMIN_TOKEN"
        );
        let stale = refusal(&answer(412, "{}", Some(9)), Some(7));
        assert!(stale.contains("since version 7 was read"), "{stale}");
        assert!(stale.contains("now at version 9"), "{stale}");
        assert_eq!(
            refusal(
                &answer(
                    422,
                    r#"{"error":"invalid change","errors":[{"path":"routes[0].split","message":"all weights are 0"}]}"#,
                    None
                ),
                None
            ),
            "invalid change:\n  routes[0].split: all weights are 0"
        );
        assert_eq!(
            refusal(
                &answer(404, r#"{"error":"no route named \"x\""}"#, None),
                None
            ),
            "no route named \"x\" (404)"
        );
        assert_eq!(
            refusal(&answer(503, "", None), None),
            "Service Unavailable (503)"
        );
    }
}
