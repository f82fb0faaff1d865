//! The decision's behaviour, step by step, over hand-built tables and a fake health view.

use super::table::{Balance, HashKey, HostPattern};
use super::testutil::*;
use super::*;

const BLUE: PoolId = 0;
const GREEN: PoolId = 1;
const RED: PoolId = 2;

fn pools() -> Vec<table::Pool> {
    vec![
        pool("blue", 0, &[1, 1], Balance::RoundRobin),
        pool("green", 1, &[1, 1], Balance::LeastRequest),
        pool("red", 2, &[1], Balance::RoundRobin),
    ]
}

fn one_route(route: table::Route) -> Table {
    table(vec![route], pools())
}

fn web() -> table::Route {
    route("web", &[(BLUE, 95), (GREEN, 5)])
}

fn pools_of_all_buckets(split: &[table::SplitEntry], health: &FakeHealth) -> Vec<Option<PoolId>> {
    (0..BUCKETS)
        .map(|b| choose_pool(split, b, health))
        .collect()
}

fn count(picks: &[Option<PoolId>], pool: PoolId) -> usize {
    picks.iter().filter(|&&p| p == Some(pool)).count()
}

// Step 1: routes.

#[test]
fn first_matching_route_wins_and_none_is_404() {
    let mut api = route("api", &[(GREEN, 1)]);
    api.hosts = vec![HostPattern::Exact("app.example.com".into())];
    api.path_prefix = "/api".into();
    let mut wild = route("wild", &[(RED, 1)]);
    wild.hosts = vec![HostPattern::Suffix(".example.com".into())];
    let mut exact = route("exact", &[(BLUE, 1)]);
    exact.hosts = vec![HostPattern::Exact("app.example.com".into())];
    let t = table(vec![api, wild, exact], pools());
    let h = FakeHealth::new(&t);
    let pick = |host: &str, path: &str| decide(&t, &Req::new(host, path).view(), &h);
    assert_eq!(pick("APP.example.com:8080", "/api/x").unwrap().route, 0);
    assert_eq!(pick("app.example.com", "/apx").unwrap().route, 1);
    assert_eq!(pick("a.b.example.com", "/").unwrap().route, 1);
    assert_eq!(pick("example.com", "/"), Err(Refusal::NoRoute));
    assert_eq!(pick("other.org", "/api"), Err(Refusal::NoRoute));
}

#[test]
fn a_catch_all_route_takes_what_the_others_leave() {
    let mut api = route("api", &[(GREEN, 1)]);
    api.path_prefix = "/api/".into();
    let t = table(vec![api, route("rest", &[(BLUE, 1)])], pools());
    let h = FakeHealth::new(&t);
    let d = decide(&t, &Req::new("x", "/api/v1").view(), &h).unwrap();
    assert_eq!((d.route, d.pool), (0, GREEN));
    let d = decide(&t, &Req::new("x", "/api").view(), &h).unwrap();
    assert_eq!((d.route, d.pool), (1, BLUE));
}

#[test]
fn ipv6_literal_host() {
    let mut r = web();
    r.hosts = vec![HostPattern::Exact("::1".into())];
    let t = one_route(r);
    let h = FakeHealth::new(&t);
    assert!(decide(&t, &Req::new("[::1]:8080", "/").view(), &h).is_ok());
    let refused = decide(&t, &Req::new("[::2]:8080", "/").view(), &h);
    assert_eq!(refused, Err(Refusal::NoRoute));
}

// Step 2: pins.

fn pinned_web() -> Table {
    let mut r = web();
    r.pins = vec![
        header_pin("x-canary", Some("true"), GREEN),
        cookie_pin("beta", None, RED),
        source_pin(&["10.1.0.0/16"], GREEN),
        header_pin("x-any", None, RED),
    ];
    one_route(r)
}

#[test]
fn every_pin_kind_matches() {
    let t = pinned_web();
    let h = FakeHealth::new(&t);
    let cases = [
        (Req::new("h", "/").header("x-canary", "true"), GREEN),
        (Req::new("h", "/").header("cookie", "a=1; beta=yes"), RED),
        (Req::new("h", "/").ip("10.1.2.3"), GREEN),
        (Req::new("h", "/").ip("::ffff:10.1.2.3"), GREEN),
        (Req::new("h", "/").header("x-any", ""), RED),
    ];
    for (req, pool) in cases {
        let d = decide(&t, &req.view(), &h).unwrap();
        assert!(d.pinned);
        assert_eq!(d.pool, pool);
    }
}

#[test]
fn near_misses_do_not_pin() {
    let t = pinned_web();
    let h = FakeHealth::new(&t);
    let reqs = [
        Req::new("h", "/").header("x-canary", "TRUE"),
        Req::new("h", "/").header("cookie", "betas=1; xbeta=2"),
        Req::new("h", "/").ip("10.2.0.1"),
        Req::new("h", "/"),
    ];
    for req in reqs {
        assert!(!decide(&t, &req.view(), &h).unwrap().pinned);
    }
}

#[test]
fn first_matching_pin_wins() {
    let t = pinned_web();
    let h = FakeHealth::new(&t);
    let req = Req::new("h", "/")
        .header("cookie", "beta=1")
        .header("x-canary", "true");
    assert_eq!(decide(&t, &req.view(), &h).unwrap().pool, GREEN);
}

#[test]
fn pin_to_an_unavailable_pool_falls_through_to_the_split() {
    let t = pinned_web();
    let h = FakeHealth::new(&t);
    h.pool_down(GREEN);
    // Only the first matching pin counts: a later one that matches does not apply ...
    let req = Req::new("h", "/")
        .header("x-canary", "true")
        .header("x-any", "1");
    let d = decide(&t, &req.view(), &h).unwrap();
    assert_eq!((d.pool, d.pinned), (BLUE, false));
    // ... the split decides, among the pools that are up.
    for random in 0..200 {
        let req = Req::new("h", "/").header("x-canary", "true").random(random);
        let d = decide(&t, &req.view(), &h).unwrap();
        assert_eq!((d.pool, d.pinned), (BLUE, false));
    }
    h.up(GREEN, 1);
    let req = Req::new("h", "/").header("x-canary", "true");
    let d = decide(&t, &req.view(), &h).unwrap();
    assert_eq!((d.pool, d.server, d.pinned), (GREEN, 1, true));
}

#[test]
fn cookie_pin_with_value() {
    let mut r = web();
    r.pins = vec![cookie_pin("beta", Some("on"), GREEN)];
    let t = one_route(r);
    let h = FakeHealth::new(&t);
    let pinned = |cookie: &str| {
        let req = Req::new("h", "/").header("cookie", cookie);
        decide(&t, &req.view(), &h).unwrap().pinned
    };
    assert!(pinned("beta=on"));
    assert!(pinned("x=1; beta = on "));
    assert!(!pinned("beta=off; beta=on"));
    assert!(!pinned("beta=ON"));
}

// Step 4: pools.

#[test]
fn weighted_split_gives_exact_shares() {
    let t = one_route(web());
    let h = FakeHealth::new(&t);
    let picks = pools_of_all_buckets(&t.routes[0].split, &h);
    assert_eq!(count(&picks, BLUE), 9500);
    assert_eq!(count(&picks, GREEN), 500);
    let thirds = split(&[(BLUE, 1), (GREEN, 1), (RED, 1)]).0;
    let picks = pools_of_all_buckets(&thirds, &h);
    let counts = [
        count(&picks, BLUE),
        count(&picks, GREEN),
        count(&picks, RED),
    ];
    assert_eq!(counts, [3333, 3333, 3334]);
}

#[test]
fn zero_weight_entries_get_nothing() {
    let t = one_route(web());
    let h = FakeHealth::new(&t);
    let s = split(&[(RED, 0), (BLUE, 3), (RED, 0), (GREEN, 1), (RED, 0)]).0;
    let picks = pools_of_all_buckets(&s, &h);
    assert_eq!(count(&picks, BLUE), 7500);
    assert_eq!(count(&picks, GREEN), 2500);
    assert_eq!(count(&picks, RED), 0);
}

fn canary_buckets(stable_pools: &[(PoolId, u32)], percent: u32, health: &FakeHealth) -> Vec<u16> {
    let mut entries = stable_pools.to_vec();
    let stable_total: u32 = stable_pools.iter().map(|&(_, w)| w).sum();
    let stable_weight = |w: u32| w * (100 - percent) / stable_total.max(1);
    for e in &mut entries {
        e.1 = stable_weight(e.1);
    }
    entries.push((GREEN, percent));
    let s = split(&entries).0;
    (0..BUCKETS)
        .filter(|&b| choose_pool(&s, b, health) == Some(GREEN))
        .collect()
}

#[test]
fn ramp_only_moves_users_into_the_last_pool() {
    let t = one_route(web());
    let h = FakeHealth::new(&t);
    let stable = [(BLUE, 100)];
    let steps: Vec<Vec<u16>> = [5, 20, 50, 100]
        .iter()
        .map(|&p| canary_buckets(&stable, p, &h))
        .collect();
    assert_eq!(steps[0].len(), 500);
    assert_eq!(steps[3].len(), 10_000);
    for pair in steps.windows(2) {
        assert!(pair[0].iter().all(|b| pair[1].contains(b)));
    }
    assert!(canary_buckets(&stable, 0, &h).is_empty());
}

#[test]
fn ramp_holds_when_a_stable_pool_is_down() {
    let t = one_route(web());
    let h = FakeHealth::new(&t);
    h.pool_down(RED);
    let stable = [(BLUE, 50), (RED, 50)];
    let steps: Vec<Vec<u16>> = [5, 20, 50, 100]
        .iter()
        .map(|&p| canary_buckets(&stable, p, &h))
        .collect();
    for pair in steps.windows(2) {
        assert!(pair[0].iter().all(|b| pair[1].contains(b)));
    }
    assert!(canary_buckets(&stable, 0, &h).is_empty());
}

#[test]
fn unavailable_pool_share_is_redistributed() {
    let t = one_route(web());
    let h = FakeHealth::new(&t);
    let s = split(&[(BLUE, 50), (RED, 30), (GREEN, 20)]).0;
    h.pool_down(RED);
    let picks = pools_of_all_buckets(&s, &h);
    assert_eq!(count(&picks, RED), 0);
    assert_eq!(count(&picks, BLUE), 7142); // 50/70
    assert_eq!(count(&picks, GREEN), 2858);
    h.up(RED, 0);
    let picks = pools_of_all_buckets(&s, &h);
    assert_eq!(count(&picks, RED), 3000);
}

#[test]
fn no_available_pool_is_refused() {
    let t = one_route(web());
    let h = FakeHealth::new(&t);
    h.pool_down(BLUE).pool_down(GREEN);
    let d = decide(&t, &Req::new("h", "/").view(), &h);
    assert_eq!(d, Err(Refusal::NoHealthyPool { route: 0 }));
    h.up(GREEN, 1);
    let d = decide(&t, &Req::new("h", "/").view(), &h).unwrap();
    assert_eq!((d.pool, d.server), (GREEN, 1));
}

#[test]
fn random_buckets_follow_the_weights() {
    let t = one_route(web());
    let h = FakeHealth::new(&t);
    let green = (0..20_000u64)
        .filter(|&r| {
            let d = decide(&t, &Req::new("h", "/").random(r).view(), &h).unwrap();
            d.pool == GREEN
        })
        .count();
    assert!((800..1200).contains(&green), "{green}");
}

// Step 3: hash keys.

#[test]
fn hash_key_bucket_is_deterministic_and_pinned() {
    let mut r = web();
    r.hash_key = Some(header_key("x-user"));
    let t = one_route(r);
    let h = FakeHealth::new(&t);
    let bucket = |random| {
        let req = Req::new("h", "/").header("x-user", "alice").random(random);
        decide(&t, &req.view(), &h).unwrap().bucket
    };
    let expected = hash::bucket(hash::route_seed("web"), b"alice");
    assert_eq!(expected, KNOWN_WEB_ALICE);
    assert!((0..50).all(|r| bucket(r) == expected));
}

/// `xxh3_64_with_seed(b"alice", xxh3_64(b"web")) % 10000`; a change here moves every user.
const KNOWN_WEB_ALICE: u16 = 7949;

#[test]
fn hash_key_from_cookie_and_client_ip() {
    let mut r = web();
    r.hash_key = Some(HashKey::Cookie("sid".into()));
    let mut by_ip = route("by-ip", &[(BLUE, 1)]);
    by_ip.path_prefix = "/ip".into();
    by_ip.hash_key = Some(HashKey::ClientIp);
    let t = table(vec![by_ip, r], pools());
    let h = FakeHealth::new(&t);
    let seed = hash::route_seed("web");
    let req = Req::new("h", "/")
        .header("cookie", "x=1; sid=abc")
        .random(9);
    assert_eq!(
        decide(&t, &req.view(), &h).unwrap().bucket,
        hash::bucket(seed, b"abc")
    );
    let ip_seed = hash::route_seed("by-ip");
    let want = hash::bucket(ip_seed, &[10, 9, 8, 7]);
    for ip in ["10.9.8.7", "::ffff:10.9.8.7"] {
        let req = Req::new("h", "/ip").ip(ip).random(3);
        assert_eq!(decide(&t, &req.view(), &h).unwrap().bucket, want);
    }
}

#[test]
fn missing_or_empty_hash_key_falls_back_to_random() {
    let mut r = web();
    r.hash_key = Some(header_key("x-user"));
    let t = one_route(r);
    let h = FakeHealth::new(&t);
    let buckets: HashSet<u16> = (0..100)
        .map(|random| {
            let req = Req::new("h", "/").header("x-user", "").random(random);
            decide(&t, &req.view(), &h).unwrap().bucket
        })
        .collect();
    assert!(buckets.len() > 90);
    let req = Req::new("h", "/").random(5);
    assert_eq!(
        decide(&t, &req.view(), &h).unwrap().bucket,
        random_bucket(5)
    );
}

use std::collections::HashSet;

#[test]
fn odd_requests_never_panic() {
    let mut r = web();
    r.hosts = vec![
        HostPattern::Exact("app.example.com".into()),
        HostPattern::Suffix(".example.com".into()),
    ];
    r.sticky = Some(sticky("veer_web"));
    r.hash_key = Some(HashKey::Cookie("sid".into()));
    r.pins = vec![cookie_pin("beta", Some("1"), GREEN)];
    let t = one_route(r);
    let h = FakeHealth::new(&t);
    let hosts = [
        "",
        ":",
        "[",
        "]",
        "[]:",
        "é.example.com:é",
        "a.example.com.:80:80",
        "::",
    ];
    let cookies = [
        "",
        ";",
        "=",
        "==;;==",
        "veer_web",
        "veer_web=\"",
        "sid=é; beta=1",
    ];
    let mut x = 1u64;
    for host in hosts {
        for cookie in cookies {
            x = hash::mix(x);
            let req = Req::new(host, "").header("cookie", cookie).random(x);
            let _ = decide(&t, &req.view(), &h);
        }
    }
}
