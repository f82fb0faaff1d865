//! The runtime state laid over the config file: which runtime changes still stand when the file
//! changes (a route or pool whose definition changed since the change was made: the file wins),
//! the fingerprints that tell, the effective config that results, and what only a restart can
//! change. No I/O and no lock: `mod.rs` calls these under the change lock.

use super::*;

/// Drops runtime entries made against definitions that changed (the file wins), each with a
/// warning, and compiles the result.
pub(super) fn settle(
    file: &RawConfig,
    mut runtime: Runtime,
) -> Result<(Runtime, Compiled), ConfigErrors> {
    if let Some(replaced) = &runtime.config {
        if replaced.file != fingerprint(file) {
            tracing::warn!(
                "the config file changed since a config was set through the API: the file wins, \
                 and runtime splits, drains and rollout states made since are dropped"
            );
            runtime.config = None;
            runtime.routes.clear();
            runtime.drains.clear();
        }
    }
    let base = base_config(file, &runtime);
    runtime.routes.retain(|name, entry| {
        let Some(def) = base.routes.iter().find(|r| r.name == *name) else {
            tracing::warn!(route = %name, "route no longer in the config: its runtime state is dropped");
            return false;
        };
        if fingerprint(def) != entry.base {
            tracing::warn!(route = %name, "route changed in the config file: the file wins over its runtime split and rollout state");
            return false;
        }
        let unknown = entry
            .split
            .as_ref()
            .and_then(|split| split.keys().find(|p| !base.pools.contains_key(*p)));
        if let Some(pool) = unknown {
            tracing::warn!(route = %name, pool = %pool, "runtime split names a pool no longer in the config: dropped");
            return false;
        }
        true
    });
    runtime.drains.retain(|d| {
        let kept = base.pools.get(&d.pool).is_some_and(|pool| {
            fingerprint(pool) == d.base && pool.servers.iter().any(|s| s.addr() == d.addr)
        });
        if !kept {
            tracing::warn!(pool = %d.pool, server = %d.addr, "pool changed in the config file: the file wins over the server's drain");
        }
        kept
    });
    let compiled = config::from_raw(effective_config(file, &runtime))?;
    compiled.admit()?;
    Ok((runtime, compiled))
}

/// The config runtime changes are laid over: the file, or the config the API replaced it with.
pub(super) fn base_config(file: &RawConfig, runtime: &Runtime) -> RawConfig {
    match &runtime.config {
        Some(replaced) => replaced.config.clone(),
        None => file.clone(),
    }
}

/// The base config with the runtime's splits laid over it.
pub(super) fn effective_config(file: &RawConfig, runtime: &Runtime) -> RawConfig {
    let mut config = base_config(file, runtime);
    for route in &mut config.routes {
        if let Some(split) = runtime
            .routes
            .get(&route.name)
            .and_then(|r| r.split.as_ref())
        {
            route.split = split.clone();
        }
    }
    config
}

/// A stable fingerprint of a definition: xxh3 of its JSON, as 16 hex digits.
pub fn fingerprint<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&json))
}

/// Copies from `file` into `config` what only a restart can change.
pub(super) fn keep_restart_only(config: &mut RawConfig, file: &RawConfig) {
    config.listen = file.listen.clone();
    config.tls = file.tls.clone();
    config.admin = file.admin.clone();
    let workers = file.proxy.as_ref().and_then(|p| p.workers);
    if workers.is_some() || config.proxy.is_some() {
        config.proxy.get_or_insert_with(Default::default).workers = workers;
    }
    let (level, format) = file
        .log
        .as_ref()
        .map_or((None, None), |l| (l.level.clone(), l.format));
    if level.is_some() || format.is_some() || config.log.is_some() {
        let log = config.log.get_or_insert_with(Default::default);
        log.level = level;
        log.format = format;
    }
}

/// The settings of a newly read file that only a restart can apply.
pub fn restart_needed(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    if old.tls != new.tls {
        out.push("tls");
    }
    if old.admin != new.admin {
        out.push("admin");
    }
    if old.workers != new.workers {
        out.push("proxy.workers");
    }
    if old.log.level != new.log.level || old.log.format != new.log.format {
        out.push("log.level/log.format");
    }
    out
}
