//! Change attempts are counted exactly: this binary holds one test, so the process-wide
//! metrics registry sees only its own changes.

mod common;

use common::{metric_or_panic, start_veer, Api, Upstream};

fn counter(metrics: &str, source: &str, result: &str) -> f64 {
    metric_or_panic(
        metrics,
        "veer_config_reloads_total",
        &[("source", source), ("result", result)],
    )
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
    let api = Api::new(&veer, None);
    let split = "/api/v1/routes/web/split";
    let put = |body: serde_json::Value| api.put(split, body);
    assert_eq!(put(serde_json::json!({"green": 1})).await.status, 200);
    assert_eq!(put(serde_json::json!({"blue": 1})).await.status, 200);
    assert_eq!(put(serde_json::json!({"green": 0})).await.status, 422);
    let metrics = api.metrics().await;
    assert_eq!(counter(&metrics, "api", "ok"), 2.0, "{metrics}");
    assert_eq!(counter(&metrics, "api", "error"), 1.0, "{metrics}");
    assert!(metrics.contains("veer_config_version 3"), "{metrics}");
    assert!(
        metrics.contains("veer_route_weight_percent{route=\"web\",pool=\"blue\"} 100"),
        "{metrics}"
    );
}
