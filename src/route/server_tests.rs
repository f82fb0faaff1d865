//! The decision's server choice (sticky cookie, round robin, least request), its cookie action,
//! the mirror draw and connect-failure fallbacks, over tables compiled from TOML and a fake
//! health view.

use super::testutil::*;
use super::*;

const BLUE: PoolId = 0;
const GREEN: PoolId = 1;
const SHADOW: PoolId = 2;

/// Pools blue (three servers, round robin), green (three, least request) and shadow (one), in
/// that order, so that their ids are BLUE, GREEN and SHADOW.
const POOLS: &str = r#"
[pools.blue]
servers = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
balance = "round_robin"
[pools.green]
servers = ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]
balance = "least_request"
[pools.shadow]
servers = ["10.0.2.1:80"]
"#;

/// Route `web` with `split`, sticky on cookie `veer_web`.
fn sticky_table(split: &str) -> Table {
    web(POOLS, split, "sticky = { cookie = \"veer_web\" }")
}

/// One pool `p` of `servers` (TOML array) with `balance`, all of route `web`.
fn one_pool(servers: &str, balance: &str) -> Table {
    web(
        &format!("[pools.p]\nservers = {servers}\nbalance = \"{balance}\""),
        "{ p = 1 }",
        "",
    )
}

fn with_cookie(t: &Table, bucket: u16, pool: PoolId, server: ServerId) -> Req {
    let id = t.pools[usize::from(pool)].servers[usize::from(server)].cookie_id;
    let value = sticky::encode(t.routes[0].seed, bucket, id);
    Req::new("h", "/").header("cookie", &format!("other=1; veer_web={value}"))
}

// Step 5 and 6: sticky sessions.

#[test]
fn new_user_gets_a_cookie_that_keeps_them() {
    let t = sticky_table("{ blue = 1 }");
    let h = FakeHealth::new(&t);
    let first = decide(&t, &Req::new("h", "/").random(77).view(), &h).unwrap();
    assert!(first.set_cookie);
    let value = sticky_value(&t, &first).unwrap();
    assert_eq!(
        sticky::decode(t.routes[0].seed, value.as_str()),
        Some((
            first.bucket,
            t.pools[0].servers[usize::from(first.server)].cookie_id
        ))
    );
    let cookie = format!("veer_web={value}");
    for random in 0..30 {
        let req = Req::new("h", "/").header("cookie", &cookie).random(random);
        let d = decide(&t, &req.view(), &h).unwrap();
        assert_eq!(
            (d.server, d.bucket, d.set_cookie),
            (first.server, first.bucket, false)
        );
    }
}

#[test]
fn cookie_bucket_follows_the_ramp() {
    let t = sticky_table("{ blue = 95, green = 5 }");
    let h = FakeHealth::new(&t);
    // Bucket 9000 is blue at 5% and green at 50%.
    let req = with_cookie(&t, 9000, BLUE, 2);
    let d = decide(&t, &req.view(), &h).unwrap();
    assert_eq!((d.pool, d.server, d.set_cookie), (BLUE, 2, false));
    let t = sticky_table("{ blue = 50, green = 50 }");
    let d = decide(&t, &req.view(), &h).unwrap();
    assert_eq!((d.pool, d.bucket, d.set_cookie), (GREEN, 9000, true));
}

#[test]
fn malformed_or_forged_cookies_are_ignored() {
    let t = sticky_table("{ blue = 1 }");
    let h = FakeHealth::new(&t);
    let good = with_cookie(&t, 10, BLUE, 1);
    let good_value = good.headers["cookie"].to_str().unwrap().to_owned();
    let forged = good_value.replace("veer_web=000a", "veer_web=000b");
    let other_seed = sticky::encode(1, 10, t.pools[0].servers[1].cookie_id);
    let bad = [
        "veer_web=".to_owned(),
        "veer_web=garbage".to_owned(),
        "veer_web=é".to_owned(),
        forged,
        format!("veer_web={other_seed}"),
        format!("{good_value}00"),
    ];
    for cookie in bad {
        let req = Req::new("h", "/").header("cookie", &cookie).random(1234);
        let d = decide(&t, &req.view(), &h).unwrap();
        assert!(d.set_cookie, "{cookie}");
        assert_eq!(d.bucket, random_bucket(1234), "{cookie}");
    }
}

#[test]
fn cookie_is_reissued_when_its_server_is_down() {
    let t = sticky_table("{ blue = 1 }");
    let h = FakeHealth::new(&t);
    h.down(BLUE, 1);
    let req = with_cookie(&t, 4321, BLUE, 1);
    let d = decide(&t, &req.view(), &h).unwrap();
    assert_ne!(d.server, 1);
    assert_eq!((d.bucket, d.set_cookie), (4321, true));
}

#[test]
fn cookie_is_reissued_when_its_server_left_the_pool() {
    let before = sticky_table("{ blue = 1 }");
    let req = with_cookie(&before, 12, BLUE, 2);
    // The same pool with other servers.
    let replaced = POOLS.replace("10.0.0.", "10.0.7.");
    let t = web(
        &replaced,
        "{ blue = 1 }",
        "sticky = { cookie = \"veer_web\" }",
    );
    let h = FakeHealth::new(&t);
    let d = decide(&t, &req.view(), &h).unwrap();
    assert_eq!((d.bucket, d.set_cookie), (12, true));
    // A server of another pool is not "in the pool" either.
    let req = with_cookie(&t, 12, GREEN, 0);
    assert!(decide(&t, &req.view(), &h).unwrap().set_cookie);
}

#[test]
fn routes_without_sticky_never_set_cookies() {
    let t = web(POOLS, "{ blue = 1 }", "");
    let h = FakeHealth::new(&t);
    let d = decide(&t, &Req::new("h", "/").view(), &h).unwrap();
    assert!(!d.set_cookie);
    assert_eq!(sticky_value(&t, &d), None);
}

// Step 5: balance.

#[test]
fn round_robin_cycles_in_order_and_skips_unavailable() {
    let t = one_pool(
        r#"[{ addr = "10.0.0.1:80", weight = 2 }, "10.0.0.2:80"]"#,
        "round_robin",
    );
    let h = FakeHealth::new(&t);
    let pick = || decide(&t, &Req::new("h", "/").view(), &h).unwrap().server;
    let picks: Vec<ServerId> = (0..6).map(|_| pick()).collect();
    assert_eq!(picks, [0, 1, 0, 0, 1, 0]);
    h.down(BLUE, 0);
    assert!((0..6).all(|_| pick() == 1));
    h.up(BLUE, 0).down(BLUE, 1);
    assert!((0..6).all(|_| pick() == 0));
}

#[test]
fn least_request_prefers_fewer_in_flight() {
    let t = sticky_table("{ green = 1 }");
    let h = FakeHealth::new(&t);
    h.set_in_flight(GREEN, 0, 9).set_in_flight(GREEN, 1, 0);
    h.set_in_flight(GREEN, 2, 5);
    let mut seen = [0u32; 3];
    for random in 0..3000 {
        let d = decide(&t, &Req::new("h", "/").random(random).view(), &h).unwrap();
        seen[usize::from(d.server)] += 1;
    }
    // Two distinct choices: the busiest server never wins, the idlest wins whenever drawn.
    assert_eq!(seen[0], 0);
    assert!(seen[1] > 1800 && seen[2] > 800, "{seen:?}");
}

#[test]
fn least_request_skips_unavailable_choices() {
    let t = sticky_table("{ green = 1 }");
    let h = FakeHealth::new(&t);
    h.down(GREEN, 0).down(GREEN, 1);
    h.set_in_flight(GREEN, 2, 100);
    for random in 0..200 {
        let d = decide(&t, &Req::new("h", "/").random(random).view(), &h).unwrap();
        assert_eq!(d.server, 2);
    }
}

#[test]
fn least_request_draws_by_weight() {
    let t = one_pool(
        r#"[{ addr = "10.0.1.1:80", weight = 8 }, "10.0.1.2:80", "10.0.1.3:80"]"#,
        "least_request",
    );
    let h = FakeHealth::new(&t);
    let mut seen = [0u32; 3];
    for random in 0..4000 {
        let (a, b) = two_choices(&t.pools[0], random).unwrap();
        assert_ne!(a, b);
        seen[usize::from(a)] += 1;
    }
    assert!(seen[0] > 2800, "{seen:?}");
    let d = decide(&t, &Req::new("h", "/").view(), &h).unwrap();
    assert!(usize::from(d.server) < 3);
}

#[test]
fn single_server_pools_work_with_either_balance() {
    for balance in ["round_robin", "least_request"] {
        let t = one_pool(r#"["10.0.0.1:80"]"#, balance);
        let h = FakeHealth::new(&t);
        for random in 0..20 {
            let d = decide(&t, &Req::new("h", "/").random(random).view(), &h).unwrap();
            assert_eq!(d.server, 0);
        }
    }
}

#[test]
fn empty_rr_order_still_balances() {
    // The compiler never lays out an empty order; a malformed table still gets a server.
    for balance in ["round_robin", "least_request"] {
        let mut t = one_pool(r#"["10.0.0.1:80", "10.0.0.2:80"]"#, balance);
        t.pools[0].rr_order = Box::new([]);
        let h = FakeHealth::new(&t);
        h.down(0, 0);
        for random in 0..20 {
            let d = decide(&t, &Req::new("h", "/").random(random).view(), &h).unwrap();
            assert_eq!(d.server, 1);
        }
    }
}

// Connect-failure fallbacks.

#[test]
fn fallback_walks_forward_from_first_skipping_unavailable() {
    let t = one_pool(
        r#"["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80"]"#,
        "round_robin",
    );
    let h = FakeHealth::new(&t);
    let order: Vec<_> = (1..=5).map(|a| fallback(&t, &h, 0, 3, a)).collect();
    assert_eq!(order, [Some(4), Some(0), Some(1), Some(2), None]);
    h.down(0, 0);
    let order: Vec<_> = (1..=4).map(|a| fallback(&t, &h, 0, 3, a)).collect();
    assert_eq!(order, [Some(4), Some(1), Some(2), None]);
    assert_eq!(fallback(&t, &h, 0, 3, 0), None);
    assert_eq!(fallback(&t, &h, 0, 9, 1), None);
    assert_eq!(fallback(&t, &h, 9, 0, 1), None);
}

#[test]
fn fallback_of_a_single_server_pool_is_none() {
    let t = one_pool(r#"["10.0.0.1:80"]"#, "round_robin");
    let h = FakeHealth::new(&t);
    assert_eq!(fallback(&t, &h, 0, 0, 1), None);
}

// Mirror.

#[test]
fn mirror_percent_is_honoured() {
    let mirrored = |percent: u8| {
        let mirror = format!("mirror = {{ pool = \"shadow\", percent = {percent} }}");
        let t = web(POOLS, "{ blue = 1 }", &mirror);
        assert_eq!(t.routes[0].mirror.as_ref().map(|m| m.pool), Some(SHADOW));
        let h = FakeHealth::new(&t);
        (0..10_000u64)
            .filter(|&random| {
                let req = Req::new("h", "/").random(random.wrapping_mul(0x2545_f491));
                decide(&t, &req.view(), &h).unwrap().mirror
            })
            .count()
    };
    assert_eq!(mirrored(0), 0);
    assert_eq!(mirrored(100), 10_000);
    let some = mirrored(30);
    assert!((2700..3300).contains(&some), "{some}");
}

#[test]
fn no_mirror_without_config() {
    let t = web(POOLS, "{ blue = 1 }", "");
    let h = FakeHealth::new(&t);
    assert!(!decide(&t, &Req::new("h", "/").view(), &h).unwrap().mirror);
}

#[test]
fn the_mirror_target_is_an_available_server_of_the_mirror_pool_by_its_balance() {
    // The mirror pool is green (least request over three servers).
    let t = web(
        POOLS,
        "{ blue = 1 }",
        "mirror = { pool = \"green\", percent = 100 }",
    );
    let h = FakeHealth::new(&t);
    h.down(GREEN, 0).set_in_flight(GREEN, 1, 5);
    for random in 0..200 {
        let (pool, server) = mirror_target(&t, 0, random, &h).unwrap();
        assert_eq!(pool, GREEN);
        assert_ne!(server, 0, "an unavailable server gets no copy");
        // Server 2 has fewer in flight than 1: it wins whenever both are drawn.
        assert!(server == 2 || server == 1);
    }
    let picked_2 = (0..200)
        .filter(|&random| mirror_target(&t, 0, random, &h) == Some((GREEN, 2)))
        .count();
    assert!(picked_2 > 100, "least request prefers server 2: {picked_2}");
    h.down(GREEN, 1).down(GREEN, 2);
    assert_eq!(mirror_target(&t, 0, 7, &h), None, "no available server");
    let plain = web(POOLS, "{ blue = 1 }", "");
    assert_eq!(mirror_target(&plain, 0, 7, &FakeHealth::new(&plain)), None);
}

#[test]
fn draws_are_independent() {
    // The mirror draw must not follow the bucket: at 50% mirroring, both halves of the line
    // see about half their requests mirrored.
    let t = web(
        POOLS,
        "{ blue = 1, green = 1 }",
        "mirror = { pool = \"shadow\", percent = 50 }",
    );
    let h = FakeHealth::new(&t);
    let mut grid = [[0u32; 2]; 2];
    for random in 0..20_000u64 {
        let d = decide(&t, &Req::new("h", "/").random(random).view(), &h).unwrap();
        grid[usize::from(d.pool)][usize::from(d.mirror)] += 1;
    }
    for row in grid {
        for cell in row {
            assert!((4500..5500).contains(&cell), "{grid:?}");
        }
    }
}
