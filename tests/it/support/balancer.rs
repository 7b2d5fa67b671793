//! A TCP balancer for tests with several servers: it listens on an ephemeral loopback port and
//! hands each connection to the next server in turn, skipping one that refuses the connection
//! (a killed server), and copies bytes both ways until either side closes. Stops when dropped.

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A running balancer.
pub struct Balancer {
    /// Where clients connect.
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    /// A balancer in front of `backends`.
    pub fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the balancer");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let address = listener.local_addr().expect("the balancer's address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || accept_loop(&listener, &backends, &stopping));
        Balancer { address, stop }
    }

    /// The URL agents and the CLI use.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, backends: &[SocketAddr], stop: &AtomicBool) {
    let next = AtomicUsize::new(0);
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                if let Some(server) = connect_next(backends, &next) {
                    splice(client, server);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A connection to the next server that accepts one, trying each once.
fn connect_next(backends: &[SocketAddr], next: &AtomicUsize) -> Option<TcpStream> {
    (0..backends.len()).find_map(|_| {
        let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
        TcpStream::connect_timeout(&backend, Duration::from_secs(1)).ok()
    })
}

/// Copies `client` → `server` and back on two threads; each direction's end closes the other
/// side's writing half.
fn splice(client: TcpStream, server: TcpStream) {
    let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else { return };
    std::thread::spawn(move || pump(client_reader, server));
    std::thread::spawn(move || pump(server_reader, client));
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
