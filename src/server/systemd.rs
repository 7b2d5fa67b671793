//! What `orange server` says to and takes from a service manager such as systemd: the
//! listening socket handed over by socket activation (`LISTEN_FDS`, `LISTEN_PID`), and the
//! readiness and stopping notices sent to `NOTIFY_SOCKET` (`Type=notify`). Without those
//! variables (started by hand, by a container runtime) everything here does nothing.
//!
//! A socket held by the service manager outlives the server: while one process stops and the
//! next starts, new connections wait in the socket's queue instead of being refused.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

use anyhow::{Context, Result, bail};
use sd_notify::NotifyState;
use tracing::{debug, info};

/// The listening TCP socket the service manager handed over, if it handed one.
///
/// More than one socket is refused, naming the count, since the server serves one; a handed
/// descriptor that is not a listening TCP socket is refused too.
pub fn inherited_listener() -> Result<Option<TcpListener>> {
    let fds: Vec<RawFd> =
        sd_notify::listen_fds().context("cannot read the sockets passed in LISTEN_FDS")?.collect();
    match fds.as_slice() {
        [] => Ok(None),
        [fd] => listener_from_fd(*fd).map(Some),
        more => bail!(
            "the service manager passed {} sockets (LISTEN_FDS); orange server serves one: give its .socket \
             unit a single ListenStream=",
            more.len()
        ),
    }
}

/// Takes `fd` over as a listening TCP socket, after checking that it is one.
fn listener_from_fd(fd: RawFd) -> Result<TcpListener> {
    if !is_listening_stream(fd) {
        bail!("descriptor {fd} passed in LISTEN_FDS is not a listening TCP socket");
    }
    // SAFETY: the service manager passed `fd` to this process for it to own (sd_listen_fds(3));
    // nothing else in the process uses it, and it was just checked to be a listening socket.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    listener.set_nonblocking(true).context("cannot make the passed socket non-blocking")?;
    let address = listener.local_addr().context("the passed socket has no TCP address")?;
    info!(%address, fd, "serving on the socket passed by the service manager");
    Ok(listener)
}

/// Whether `fd` is a socket in the listening state of type stream.
fn is_listening_stream(fd: RawFd) -> bool {
    int_option(fd, libc::SO_ACCEPTCONN) == Some(1) && int_option(fd, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
}

/// One integer socket option at level `SOL_SOCKET`, or `None` when `fd` is no socket.
fn int_option(fd: RawFd, name: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given; getsockopt on a
    // descriptor that is not a socket only fails.
    let done = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut value).cast(), &raw mut len) };
    (done == 0).then_some(value)
}

/// Tells the service manager that the server serves (`READY=1`), with a status line.
pub fn notify_ready(address: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&format!("serving on {address}"))]);
}

/// Tells the service manager that the server is stopping (`STOPPING=1`).
pub fn notify_stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Tells the service manager that the server reloads its certificate (`RELOADING=1`, with the
/// monotonic time `Type=notify-reload` asks for, when it can be read).
pub fn notify_reloading() {
    let mut states = vec![NotifyState::Reloading];
    states.extend(NotifyState::monotonic_usec_now().ok());
    send(&states);
}

/// Tells the service manager that a reload is over and the server serves (`READY=1`).
pub fn notify_reloaded() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Sends `states` to `NOTIFY_SOCKET`, if set; a failure is only logged, since the server
/// serves the same without a manager listening.
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    use super::*;

    #[test]
    fn a_listening_tcp_socket_is_recognised_and_other_descriptors_are_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening_stream(listener.as_raw_fd()));
        let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!is_listening_stream(connected.as_raw_fd()), "a connected stream does not listen");
        let datagram = UnixDatagram::unbound().unwrap();
        assert!(!is_listening_stream(datagram.as_raw_fd()));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_listening_stream(file.as_raw_fd()), "a file is no socket");
    }
}
