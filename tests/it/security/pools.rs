//! Slow bodies against the pools of places: a thousand connections trickling `register` bodies
//! hold connections, never the places enrolled agents are served from, so a real agent still
//! runs `task run` from the real CLI in its usual time while they go on.

use std::net::SocketAddr;

use super::*;
use crate::support::{Agent, AgentOpts};

/// Connections the attack keeps open.
const SLOW_CONNECTIONS: usize = 1_000;
/// The body size each announces; one byte a second never gets there.
const ANNOUNCED_BODY: usize = 4_000;
/// How long the attack goes on.
const ATTACK: Duration = Duration::from_secs(15);
/// A bound on one `task run` that only starvation exceeds (it is not a speed test).
const NOT_STARVED: Duration = Duration::from_secs(5);

/// Raises this process's soft limit on open files to its hard limit.
fn raise_open_files() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: the pointers are to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Opens a connection that sends a `register` head announcing [`ANNOUNCED_BODY`] bytes and the
/// body's first byte.
fn open_slow_register(addr: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).ok()?;
    let head = format!(
        "POST {REGISTER} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {ANNOUNCED_BODY}\r\nX-Forge-Appid: slow\r\nX-Forge-Time: {}\r\nX-Forge-Sign: 00\r\n\
         X-Orange-Sign-Version: 2\r\nX-Orange-Nonce: {}\r\n\r\n{{",
        unix_time_now(),
        fresh_nonce()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

/// What the attack saw.
#[derive(Debug, Default)]
struct Attack {
    /// Connections opened, counting those opened again after the server closed one.
    opened: usize,
    /// Answers saying the body came too late.
    too_late: usize,
}

/// One more byte on `stream`; false once the server answered or closed it (an answer saying the
/// body came too late is counted).
fn trickle(stream: &mut TcpStream, attack: &mut Attack) -> bool {
    let mut answer = [0u8; 4096];
    match stream.read(&mut answer) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.write_all(b" ").is_ok(),
        Ok(n) => {
            attack.too_late += usize::from(String::from_utf8_lossy(&answer[..n]).contains("did not arrive"));
            false
        }
        Err(_) => false,
    }
}

/// Keeps [`SLOW_CONNECTIONS`] slow registers going, a byte a second each, opening a new one for
/// every one the server closes, until `stop`.
fn slow_bodies(addr: SocketAddr, stop: &AtomicBool, started: &AtomicBool) -> Attack {
    let mut attack = Attack::default();
    let mut streams: Vec<TcpStream> = Vec::with_capacity(SLOW_CONNECTIONS);
    while !stop.load(Ordering::SeqCst) {
        let round = Instant::now();
        streams.retain_mut(|stream| trickle(stream, &mut attack));
        while streams.len() < SLOW_CONNECTIONS {
            let Some(stream) = open_slow_register(addr) else { break };
            streams.push(stream);
            attack.opened += 1;
        }
        started.store(streams.len() == SLOW_CONNECTIONS, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
    }
    attack
}

#[test]
fn a_thousand_slow_register_bodies_do_not_starve_an_enrolled_agent() {
    raise_open_files();
    let server = Server::start(ServerOpts::poll_window(5));
    let _agent = Agent::start_online(&server, "w1", AgentOpts::shell());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, started, addr) = (Arc::clone(&stop), Arc::clone(&started), server.addr);
        std::thread::spawn(move || slow_bodies(addr, &stop, &started))
    };
    wait_until(Duration::from_secs(30), "the slow connections to be open", || started.load(Ordering::SeqCst));
    let attack_from = Instant::now();
    // Let the slow bodies take whatever they can, then run tasks until the attack ends.
    std::thread::sleep(Duration::from_secs(2));
    let mut runs = 0;
    while attack_from.elapsed() < ATTACK {
        let began = Instant::now();
        let run = server.operator(&["task", "run", "--appid", "w1", "--", "echo alive"]).run();
        let took = began.elapsed();
        assert_eq!((run.code(), run.stdout.as_str()), (Some(0), "alive\n"), "{run}");
        assert!(took < NOT_STARVED, "task run took {took:?} during the attack\n{run}");
        runs += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::SeqCst);
    let attack = attacker.join().expect("the attacker");
    assert!(runs >= 3, "too few runs during the attack: {runs}");
    assert!(attack.too_late > 0, "no slow body was told it came too late: {attack:?}");
    let stderr = server.stderr();
    let body_lines = stderr.lines().filter(|l| l.contains("agent request body refused")).count();
    assert!(
        (1..=10).contains(&body_lines),
        "{} slow bodies refused in {body_lines} log lines",
        attack.too_late
    );
}
