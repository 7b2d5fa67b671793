//! The client's address as the handlers see it: the address the front of the server learned for
//! the connection (the TCP peer, or the client a trusted balancer named) when it put a
//! [`ClientAddr`] in the request, else the TCP peer. Limits keyed on a source use this.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    /// The address of the request whose extensions are `extensions`, if the server knows it.
    pub fn of(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
        extensions
            .get::<ClientAddr>()
            .map(|client| client.0)
            .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|peer| peer.0))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        ClientAddr::of(&parts.extensions)
            .map(ClientAddr)
            .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "the server does not know the client's address"))
    }
}
