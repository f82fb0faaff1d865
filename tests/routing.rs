//! Routing over real sockets: splits, hash keys across instances, the ramp, pins, hosts and
//! paths, sticky sessions, and the balance policies.

mod common;

use common::{client, get, send, start_veer, tally, two_pools, Upstream, IO_TIMEOUT};

#[tokio::test]
async fn split_90_10_over_4000_requests_lands_within_3_points() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let veer = start_veer(&two_pools(
        blue.addr,
        green.addr,
        "[[routes]]\nname = \"web\"\nsplit = { blue = 90, green = 10 }\n",
    ))
    .await;
    let c = client();
    let counts = tally(4000, |_| send(&c, veer.http_addr, "GET", "/", &[])).await;
    let green_share = counts.get("green").copied().unwrap_or(0) as f64 / 4000.0;
    assert!(
        (0.07..=0.13).contains(&green_share),
        "green share {green_share}, counts {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 4000);
}

#[tokio::test]
async fn the_same_hash_key_lands_in_the_same_pool_on_two_instances() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let cfg = two_pools(
        blue.addr,
        green.addr,
        "[[routes]]\nname = \"web\"\nsplit = { blue = 50, green = 50 }\nhash_key = \"header:x-user\"\n",
    );
    let a = start_veer(&cfg).await;
    let b = start_veer(&cfg).await;
    let mut seen = std::collections::HashSet::new();
    for user in 0..200 {
        let id = format!("user-{user}");
        let on_a = get(a.http_addr, "/", &[("x-user", &id)]).await.body;
        let on_b = get(b.http_addr, "/", &[("x-user", &id)]).await.body;
        assert_eq!(on_a, on_b, "user {id} placed differently");
        assert_eq!(on_a, get(a.http_addr, "/", &[("x-user", &id)]).await.body);
        seen.insert(on_a);
    }
    assert_eq!(seen.len(), 2, "both pools get users");
}

#[tokio::test]
async fn raising_the_canary_only_moves_users_into_it_and_zero_moves_them_all_back() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let make = |canary: u32| {
        two_pools(
        blue.addr,
        green.addr,
            &format!(
                "[[routes]]\nname = \"web\"\nsplit = {{ blue = {}, green = {canary} }}\nhash_key = \"cookie:uid\"\n",
                100 - canary
            ),
        )
    };
    let veer = start_veer(&make(5)).await;
    let users: Vec<String> = (0..400).map(|i| format!("uid=u{i}")).collect();
    let placement = |veer_addr| {
        let users = users.clone();
        async move {
            let mut canary = Vec::new();
            for u in &users {
                if get(veer_addr, "/", &[("cookie", u)]).await.body.trim() == "green" {
                    canary.push(u.clone());
                }
            }
            canary
        }
    };
    // The share of 400 users in the canary at each step: within four standard deviations of
    // the weight (users are placed by a hash of their cookie, as if at random), so a wrong
    // share falls outside while the right one never does.
    let share = |step: u32, canary: &[String]| {
        let n = users.len() as f64;
        let p = f64::from(step) / 100.0;
        let spread = 4.0 * (n * p * (1.0 - p)).sqrt();
        let got = canary.len() as f64;
        assert!(
            (got - n * p).abs() <= spread,
            "{step}%: {} of {} users in the canary",
            canary.len(),
            users.len()
        );
    };
    let at5 = placement(veer.http_addr).await;
    share(5, &at5);
    let mut previous = at5;
    for step in [20, 50, 100] {
        let table = veer::config::from_toml(
            &format!("[listen]\nhttp = \"127.0.0.1:0\"\n{}", make(step)),
            "t.toml",
        )
        .unwrap()
        .table;
        veer.state.install(table);
        let now = placement(veer.http_addr).await;
        for u in &previous {
            assert!(now.contains(u), "{u} left the canary at {step}%");
        }
        share(step, &now);
        previous = now;
    }
    assert_eq!(previous.len(), users.len(), "100% is everyone");
    let table = veer::config::from_toml(
        &format!("[listen]\nhttp = \"127.0.0.1:0\"\n{}", make(0)),
        "t.toml",
    )
    .unwrap()
    .table;
    veer.state.install(table);
    assert!(placement(veer.http_addr).await.is_empty(), "0% is no one");
}

#[tokio::test]
async fn pins_by_header_cookie_and_source() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let veer = start_veer(&two_pools(
        blue.addr,
        green.addr,
        r#"
[[routes]]
name = "pinned-source"
path_prefix = "/internal"
split = { blue = 100, green = 0 }
[[routes.pin]]
source = ["127.0.0.0/8"]
pool = "green"

[[routes]]
name = "web"
split = { blue = 100, green = 0 }
[[routes.pin]]
header = "x-canary"
equals = "true"
pool = "green"
[[routes.pin]]
header = "x-any-canary"
pool = "green"
[[routes.pin]]
cookie = "beta"
pool = "green"
"#,
    ))
    .await;
    let a = veer.http_addr;
    assert_eq!(get(a, "/", &[]).await.body, "blue\n");
    assert_eq!(get(a, "/", &[("x-canary", "true")]).await.body, "green\n");
    assert_eq!(get(a, "/", &[("x-canary", "false")]).await.body, "blue\n");
    assert_eq!(
        get(a, "/", &[("x-any-canary", "whatever")]).await.body,
        "green\n"
    );
    assert_eq!(
        get(a, "/", &[("cookie", "a=1; beta=yes")]).await.body,
        "green\n"
    );
    assert_eq!(
        get(a, "/", &[("cookie", "notbeta=yes")]).await.body,
        "blue\n"
    );
    assert_eq!(get(a, "/internal/x", &[]).await.body, "green\n");
}

#[tokio::test]
async fn routes_match_by_host_and_path_prefix_in_order() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let veer = start_veer(&two_pools(
        blue.addr,
        green.addr,
        r#"
[[routes]]
name = "api"
hosts = ["api.example.com"]
path_prefix = "/v2"
split = { green = 1 }

[[routes]]
name = "shop"
hosts = ["*.shop.example.com", "shop.example.com"]
split = { blue = 1 }
"#,
    ))
    .await;
    let a = veer.http_addr;
    assert_eq!(
        get(a, "/v2/x", &[("host", "api.example.com")]).await.body,
        "green\n"
    );
    assert_eq!(
        get(a, "/v2/x", &[("host", "API.example.com:8080")])
            .await
            .body,
        "green\n"
    );
    assert_eq!(
        get(a, "/", &[("host", "eu.shop.example.com")]).await.body,
        "blue\n"
    );
    assert_eq!(
        get(a, "/", &[("host", "shop.example.com")]).await.body,
        "blue\n"
    );
    let none = get(a, "/v1", &[("host", "api.example.com")]).await;
    assert_eq!(none.status, 404);
    assert_eq!(none.body, "no route\n");
    assert_eq!(get(a, "/", &[("host", "example.com")]).await.status, 404);
}

#[tokio::test]
async fn a_sticky_user_keeps_its_server_and_a_bad_cookie_is_ignored() {
    let ups = [
        Upstream::named("one").await,
        Upstream::named("two").await,
        Upstream::named("three").await,
    ];
    let veer = start_veer(&format!(
        r#"
[pools.app]
servers = ["{}", "{}", "{}"]
[[routes]]
name = "web"
split = {{ app = 1 }}
sticky = {{ cookie = "veer_web", max_age = "10m" }}
"#,
        ups[0].addr, ups[1].addr, ups[2].addr
    ))
    .await;
    let a = veer.http_addr;
    let first = get(a, "/", &[]).await;
    let set = first.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("veer_web="), "{set}");
    assert!(
        set.contains("; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"),
        "{set}"
    );
    let pair = set.split(';').next().unwrap().to_string();
    for _ in 0..20 {
        let again = get(a, "/", &[("cookie", &pair)]).await;
        assert_eq!(again.body, first.body);
        assert!(
            again.headers.get("set-cookie").is_none(),
            "no new cookie while it holds"
        );
    }
    // Without the cookie, round robin spreads requests over all three.
    let spread = tally(30, |_| get(a, "/", &[])).await;
    assert_eq!(spread.len(), 3, "{spread:?}");
    for garbage in [
        "veer_web=",
        "veer_web=zzzz",
        "veer_web=0000000000000000000000000000",
        "veer_web=é",
    ] {
        let got = get(a, "/", &[("cookie", garbage)]).await;
        assert_eq!(got.status, 200, "{garbage}");
        assert!(
            got.headers.contains_key("set-cookie"),
            "{garbage} is replaced"
        );
    }
}

#[tokio::test]
async fn round_robin_spreads_evenly_and_least_request_avoids_the_busy_server() {
    let ups = [
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("c").await,
    ];
    let veer = start_veer(&format!(
        "[pools.p]\nservers = [\"{}\", \"{}\", \"{}\"]\nbalance = \"round_robin\"\n[[routes]]\nname = \"r\"\nsplit = {{ p = 1 }}\n",
        ups[0].addr, ups[1].addr, ups[2].addr
    ))
    .await;
    let counts = tally(30, |_| get(veer.http_addr, "/", &[])).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );

    // The busy server holds every request it gets until the end of the test.
    let (busy, _held) = Upstream::gated("busy").await;
    let idle = Upstream::named("idle").await;
    let veer = start_veer(&format!(
        "[pools.p]\nservers = [\"{}\", \"{}\"]\nbalance = \"least_request\"\n[[routes]]\nname = \"r\"\nsplit = {{ p = 1 }}\n",
        busy.addr, idle.addr
    ))
    .await;
    let addr = veer.http_addr;
    let mut stuck = None;
    // One request at a time until one is held by the busy server (each goes to either).
    for _ in 0..64 {
        let request = tokio::spawn(async move { get(addr, "/", &[]).await });
        common::eventually(IO_TIMEOUT, "answered by idle or held by busy", || async {
            request.is_finished() || busy.hits() > 0
        })
        .await;
        if busy.hits() > 0 {
            stuck = Some(request);
            break;
        }
        assert_eq!(request.await.unwrap().body, "idle\n");
    }
    let stuck = stuck.expect("a request reached the busy server");
    // From then on every request avoids the server with one in flight.
    for _ in 0..20 {
        assert_eq!(get(addr, "/", &[]).await.body, "idle\n");
    }
    assert_eq!(busy.hits(), 1);
    stuck.abort();
}
