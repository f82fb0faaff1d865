//! Change attempts are counted exactly: this binary holds one test, so the process-wide
//! metrics registry sees only its own changes.

mod common;

use bytes::Bytes;
use common::{start_veer, Upstream};
use http_body_util::{BodyExt, Full};

async fn call(method: &str, url: String, body: &'static str) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn counter(metrics: &str, source: &str, result: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("veer_config_reloads_total")
                && l.contains(&format!("source=\"{source}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn every_api_change_attempt_is_counted_with_its_result() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let veer = start_veer(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[pools.blue]\nservers = [\"{}\"]\n\
         [pools.green]\nservers = [\"{}\"]\n[[routes]]\nname = \"web\"\nsplit = {{ blue = 1 }}\n",
        blue.addr, green.addr
    ))
    .await;
    let admin = veer.admin_addr.unwrap();
    let split = format!("http://{admin}/api/v1/routes/web/split");
    assert_eq!(call("PUT", split.clone(), r#"{"green": 1}"#).await.0, 200);
    assert_eq!(call("PUT", split.clone(), r#"{"blue": 1}"#).await.0, 200);
    assert_eq!(call("PUT", split.clone(), r#"{"green": 0}"#).await.0, 422);
    let (status, metrics) = call("GET", format!("http://{admin}/metrics"), "").await;
    assert_eq!(status, 200);
    assert_eq!(counter(&metrics, "api", "ok"), 2, "{metrics}");
    assert_eq!(counter(&metrics, "api", "error"), 1, "{metrics}");
    assert!(metrics.contains("veer_config_version 3"), "{metrics}");
    assert!(
        metrics.contains("veer_route_weight_percent{route=\"web\",pool=\"blue\"} 100"),
        "{metrics}"
    );
}
