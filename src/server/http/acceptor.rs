//! The first step of every accepted connection, before TLS and HTTP: it takes a slot in the
//! connection counts (refusing the connection at once past a limit), reads the PROXY protocol
//! header of a trusted balancer to learn the client's address, counts the connection for that
//! address, and puts the address in every request as [`ClientAddr`].

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::Request;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::client_addr::ClientAddr;
use super::connections::{Connections, Slot};
use super::proxy_protocol::{self, Header};
use super::refusal_log;
use crate::server::config::ConnectionLimits;

/// Admits connections within the limits and learns their client's address.
#[derive(Clone)]
pub struct Acceptor {
    shared: Arc<Shared>,
}

struct Shared {
    connections: Arc<Connections>,
    limits: ConnectionLimits,
}

impl Acceptor {
    /// An acceptor holding at most `max_total` connections, and `limits`' other bounds.
    pub fn new(limits: &ConnectionLimits, max_total: usize) -> Self {
        let connections = Connections::new(max_total, limits.max_per_source);
        Acceptor { shared: Arc::new(Shared { connections, limits: limits.clone() }) }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for Acceptor {
    type Stream = Connection;
    type Service = WithClientAddr<S>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Connection, WithClientAddr<S>)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let (connection, client) = shared.admit(stream).await?;
            Ok((connection, WithClientAddr { inner: service, client: ClientAddr(client) }))
        })
    }
}

impl Shared {
    /// The connection with its slot and the client's address, or the error that closes it.
    async fn admit(&self, mut stream: TcpStream) -> io::Result<(Connection, SocketAddr)> {
        let peer = canonical(stream.peer_addr()?);
        let mut slot = self.connections.open().map_err(|full| self.refuse(peer.ip(), full.reason(), None))?;
        let (client, prefix) = match self.limits.trusts_proxy(peer.ip()) {
            false => (peer, Vec::new()),
            true => match proxy_protocol::read_header(&mut stream, proxy_protocol::HEADER_TIMEOUT).await {
                Ok((Header::Proxied(client), prefix)) => (canonical(client), prefix),
                Ok((Header::Local, prefix)) => (peer, prefix),
                Err(e) => {
                    let detail = e.to_string();
                    return Err(self.refuse(peer.ip(), "no valid PROXY protocol header", Some(&detail)));
                }
            },
        };
        slot.assign(client.ip()).map_err(|full| self.refuse(client.ip(), full.reason(), None))?;
        Ok((Connection { stream, prefix, prefix_read: 0, _slot: slot }, client))
    }

    /// Logs a refusal; the error returned ends the connection.
    fn refuse(&self, source: IpAddr, reason: &'static str, detail: Option<&str>) -> io::Error {
        refusal_log::connection_refused(source, reason, detail);
        io::Error::new(io::ErrorKind::ConnectionRefused, reason)
    }
}

/// `address` with an IPv4 address written as IPv6 (`::ffff:a.b.c.d`, as a dual-stack socket
/// reports IPv4 peers) as the IPv4 one, so each client has one key in the counts.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// An admitted connection: the bytes read past a PROXY header first, then the socket; its
/// slot in the counts is given back when it is dropped.
pub struct Connection {
    stream: TcpStream,
    prefix: Vec<u8>,
    prefix_read: usize,
    _slot: Slot,
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.prefix_read < this.prefix.len() {
            let rest = &this.prefix[this.prefix_read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.prefix_read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The service of one connection, putting the client's address in each of its requests.
#[derive(Clone)]
pub struct WithClientAddr<S> {
    inner: S,
    client: ClientAddr,
}

impl<S, B> tower_service::Service<Request<B>> for WithClientAddr<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.client);
        self.inner.call(request)
    }
}
