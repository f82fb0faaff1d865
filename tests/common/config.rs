//! Config text for tests, and veer started in-process from it.

use std::fmt::Display;

/// One pool `app` of `servers` behind route `web`, after `extra` (e.g. a `[proxy]` table).
pub fn one_pool(servers: &[impl Display], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "{extra}\n[pools.app]\nservers = [{}]\n\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        list.join(", ")
    )
}

/// Pools `blue` and `green` of one server each, then `routes` (TOML for `[[routes]]`).
pub fn two_pools(blue: impl Display, green: impl Display, routes: &str) -> String {
    format!("[pools.blue]\nservers = [\"{blue}\"]\n\n[pools.green]\nservers = [\"{green}\"]\n\n{routes}")
}

/// A config for `veer run` as a child process: the proxy on 127.0.0.1:0 and a JSON log (which
/// `VeerProcess` reads), with `log` added to `[log]`, then `body`.
pub fn child_toml(log: &str, body: &str) -> String {
    format!("[listen]\nhttp = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n{log}\n\n{body}")
}

/// Starts veer in this process from a TOML config whose `[listen]` is filled in with
/// 127.0.0.1:0.
pub async fn start_veer(toml: &str) -> veer::run::Running {
    let text = format!("[listen]\nhttp = \"127.0.0.1:0\"\n\n{toml}");
    let compiled = match veer::config::from_toml(&text, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}\n---\n{text}"),
    };
    veer::run::start(compiled).await.expect("veer starts")
}
