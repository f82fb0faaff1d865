//! The decision's behaviour, step by step, over tables compiled from TOML and a fake health
//! view.

use super::testutil::*;
use super::*;

const BLUE: PoolId = 0;
const GREEN: PoolId = 1;
const RED: PoolId = 2;

/// Pools blue (two servers, round robin), green (two, least request) and red (one), in that
/// order, so that their ids are BLUE, GREEN and RED.
const POOLS: &str = r#"
[pools.blue]
servers = ["10.0.0.1:80", "10.0.0.2:80"]
balance = "round_robin"
[pools.green]
servers = ["10.0.1.1:80", "10.0.1.2:80"]
balance = "least_request"
[pools.red]
servers = ["10.0.2.1:80"]
"#;

/// Route `web`, blue 95 / green 5, with `extra` lines in its table.
fn web_with(extra: &str) -> Table {
    web(POOLS, "{ blue = 95, green = 5 }", extra)
}

/// The split of route `web` at `split`.
fn split_of(split: &str) -> Vec<table::SplitEntry> {
    web(POOLS, split, "").routes[0].split.clone()
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
    let t = compile(&format!(
        "{POOLS}
[[routes]]
name = \"api\"
hosts = [\"app.example.com\"]
path_prefix = \"/api\"
split = {{ green = 1 }}
[[routes]]
name = \"wild\"
hosts = [\"*.example.com\"]
split = {{ red = 1 }}
[[routes]]
name = \"exact\"
hosts = [\"app.example.com\"]
split = {{ blue = 1 }}
"
    ));
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
    let t = compile(&format!(
        "{POOLS}
[[routes]]
name = \"api\"
path_prefix = \"/api/\"
split = {{ green = 1 }}
[[routes]]
name = \"rest\"
split = {{ blue = 1 }}
"
    ));
    let h = FakeHealth::new(&t);
    let d = decide(&t, &Req::new("x", "/api/v1").view(), &h).unwrap();
    assert_eq!((d.route, d.pool), (0, GREEN));
    let d = decide(&t, &Req::new("x", "/api").view(), &h).unwrap();
    assert_eq!((d.route, d.pool), (1, BLUE));
}

#[test]
fn ipv6_literal_host() {
    let t = web_with("hosts = [\"[::1]\"]");
    let h = FakeHealth::new(&t);
    assert!(decide(&t, &Req::new("[::1]:8080", "/").view(), &h).is_ok());
    let refused = decide(&t, &Req::new("[::2]:8080", "/").view(), &h);
    assert_eq!(refused, Err(Refusal::NoRoute));
}

// Step 2: pins.

fn pinned_web() -> Table {
    web_with(
        r#"
[[routes.pin]]
header = "x-canary"
equals = "true"
pool = "green"
[[routes.pin]]
cookie = "beta"
pool = "red"
[[routes.pin]]
source = ["10.1.0.0/16"]
pool = "green"
[[routes.pin]]
header = "x-any"
pool = "red"
"#,
    )
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
        assert!(d.pinned());
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
        assert!(!decide(&t, &req.view(), &h).unwrap().pinned());
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
    assert_eq!((d.pool, d.pinned()), (BLUE, false));
    // ... the split decides, among the pools that are up.
    for random in 0..200 {
        let req = Req::new("h", "/").header("x-canary", "true").random(random);
        let d = decide(&t, &req.view(), &h).unwrap();
        assert_eq!((d.pool, d.pinned()), (BLUE, false));
    }
    h.up(GREEN, 1);
    let req = Req::new("h", "/").header("x-canary", "true");
    let d = decide(&t, &req.view(), &h).unwrap();
    assert_eq!((d.pool, d.server, d.pinned()), (GREEN, 1, true));
}

#[test]
fn cookie_pin_with_value() {
    let t = web_with("[[routes.pin]]\ncookie = \"beta\"\nequals = \"on\"\npool = \"green\"");
    let h = FakeHealth::new(&t);
    let pinned = |cookie: &str| {
        let req = Req::new("h", "/").header("cookie", cookie);
        decide(&t, &req.view(), &h).unwrap().pinned()
    };
    assert!(pinned("beta=on"));
    assert!(pinned("x=1; beta = on "));
    assert!(!pinned("beta=off; beta=on"));
    assert!(!pinned("beta=ON"));
}

// Step 4: pools.

#[test]
fn weighted_split_gives_exact_shares() {
    let t = web_with("");
    let h = FakeHealth::new(&t);
    let picks = pools_of_all_buckets(&t.routes[0].split, &h);
    assert_eq!(count(&picks, BLUE), 9500);
    assert_eq!(count(&picks, GREEN), 500);
    let thirds = split_of("{ blue = 1, green = 1, red = 1 }");
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
    let t = web_with("");
    let h = FakeHealth::new(&t);
    let s = split_of("{ red = 0, blue = 3, green = 1 }");
    let picks = pools_of_all_buckets(&s, &h);
    assert_eq!(count(&picks, BLUE), 7500);
    assert_eq!(count(&picks, GREEN), 2500);
    assert_eq!(count(&picks, RED), 0);
}

/// The buckets that land on green when the split is `stable` (pool name, share of the stable
/// percent) with green last at `percent`, as a rollout step would set it.
fn canary_buckets(stable: &[(&str, u32)], percent: u32, health: &FakeHealth) -> Vec<u16> {
    let stable_total: u32 = stable.iter().map(|&(_, w)| w).sum();
    let mut entries: Vec<String> = stable
        .iter()
        .map(|&(pool, w)| format!("{pool} = {}", w * (100 - percent) / stable_total.max(1)))
        .collect();
    entries.push(format!("green = {percent}"));
    let s = split_of(&format!("{{ {} }}", entries.join(", ")));
    (0..BUCKETS)
        .filter(|&b| choose_pool(&s, b, health) == Some(GREEN))
        .collect()
}

#[test]
fn ramp_only_moves_users_into_the_last_pool() {
    let t = web_with("");
    let h = FakeHealth::new(&t);
    let stable = [("blue", 100)];
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
    let t = web_with("");
    let h = FakeHealth::new(&t);
    h.pool_down(RED);
    let stable = [("blue", 50), ("red", 50)];
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
    let t = web_with("");
    let h = FakeHealth::new(&t);
    let s = split_of("{ blue = 50, red = 30, green = 20 }");
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
    let t = web_with("");
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
    let t = web_with("");
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
    let t = web_with("hash_key = \"header:x-user\"");
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
    let t = compile(&format!(
        "{POOLS}
[[routes]]
name = \"by-ip\"
path_prefix = \"/ip\"
split = {{ blue = 1 }}
hash_key = \"client_ip\"
[[routes]]
name = \"web\"
split = {{ blue = 95, green = 5 }}
hash_key = \"cookie:sid\"
"
    ));
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
    let t = web_with("hash_key = \"header:x-user\"");
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
    let t = web_with(
        r#"hosts = ["app.example.com", "*.example.com"]
sticky = { cookie = "veer_web" }
hash_key = "cookie:sid"
[[routes.pin]]
cookie = "beta"
equals = "1"
pool = "green"
"#,
    );
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
