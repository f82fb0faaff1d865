//! A small client for the admin API: requests with a token, a body and extra headers; answers
//! read whole, as JSON when they are JSON.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::Value;

use super::requests::client;
use super::IO_TIMEOUT;

/// The admin API of one veer.
pub struct Api {
    pub addr: SocketAddr,
    pub token: Option<&'static str>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response read whole: the body as JSON when it is JSON (else `Null`), and as text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Answer {
    /// The `ETag` as a number (`"7"` -> 7).
    pub fn etag(&self) -> u64 {
        let raw = self.headers.get("etag").expect("an ETag").to_str().unwrap();
        raw.trim_matches('"').parse().expect("a numeric ETag")
    }

    /// The body's `version`.
    pub fn version(&self) -> u64 {
        self.json["version"]
            .as_u64()
            .expect("a version in the body")
    }

    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

impl Api {
    /// The admin API of an in-process veer.
    pub fn new(running: &veer::run::Running, token: Option<&'static str>) -> Self {
        Self::at(running.admin_addr.expect("the admin API listens"), token)
    }

    /// The admin API at `addr`.
    pub fn at(addr: SocketAddr, token: Option<&'static str>) -> Self {
        Self {
            addr,
            token,
            client: client(),
        }
    }

    /// `method path` with `headers` and `body`, answered within `IO_TIMEOUT`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(token) = self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .expect("the admin API answers");
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, headers, bytes)
        };
        let what = format!("admin {method} {path} answered");
        let (status, headers, bytes) = super::within(IO_TIMEOUT, &what, exchange).await;
        Answer {
            status,
            headers,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, &[], Bytes::new()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, &[], body.to_string()).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.call("PUT", path, &[], body.to_string()).await
    }

    /// `GET /metrics` as text (asserting 200).
    pub async fn metrics(&self) -> String {
        let a = self.get("/metrics").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.text
    }
}
