//! The admin JSON API.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::Admin;

pub async fn serve(_listener: TcpListener, _admin: Arc<Admin>) {}
