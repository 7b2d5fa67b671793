//! The PROXY protocol, versions 1 and 2 (as HAProxy's `send-proxy` and `send-proxy-v2` send
//! it): the header a TCP balancer writes before its client's bytes, naming the client's
//! address. [`parse`] reads a header from the start of a buffer; [`read_header`] reads one off a
//! connection within a deadline and a size limit, and keeps the bytes that follow it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest version 1 header, `\r\n` included (the specification's own bound).
pub const V1_MAX_BYTES: usize = 107;
/// Most bytes of a version 2 header after its fixed 16: the addresses (216 at most, for Unix
/// sockets) and room for the TLVs a balancer may add (ALPN, authority, TLS details).
pub const V2_MAX_PAYLOAD: usize = 1024;
/// How long a trusted balancer may take to send the header, which it writes as soon as it
/// has connected.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection is a client's, from this address.
    Proxied(SocketAddr),
    /// The balancer speaks for itself (a health check: v2 `LOCAL`, v1 `UNKNOWN`) or names no
    /// IP address (v2 `UNSPEC` or Unix sockets): the connection's own peer is the client.
    Local,
}

/// Why a connection from a trusted balancer did not start with a usable header.
#[derive(Debug, Error)]
pub enum ProxyHeaderError {
    /// The first bytes are neither a version 1 nor a version 2 header.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// A version 1 header that does not follow the specification.
    #[error("malformed PROXY protocol v1 header: {0}")]
    BadV1(&'static str),
    /// A version 2 header that does not follow the specification.
    #[error("malformed PROXY protocol v2 header: {0}")]
    BadV2(&'static str),
    /// A version 2 header longer than [`V2_MAX_PAYLOAD`] allows.
    #[error("PROXY protocol v2 header announces {0} bytes, more than the {V2_MAX_PAYLOAD} accepted")]
    TooLong(usize),
    /// Nothing complete within [`HEADER_TIMEOUT`].
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before the header was complete.
    #[error("the connection closed inside its PROXY protocol header")]
    Closed,
    /// Reading failed.
    #[error("cannot read the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a header off `stream` within `timeout`; returns it with the bytes read past it (the
/// start of the client's own data), which the caller must hand on before reading further.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(Header, Vec<u8>), ProxyHeaderError> {
    tokio::time::timeout(timeout, read_until_parsed(stream))
        .await
        .unwrap_or(Err(ProxyHeaderError::Timeout(timeout)))
}

async fn read_until_parsed<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Header, Vec<u8>), ProxyHeaderError> {
    let mut buffer = vec![0u8; V2_FIXED + V2_MAX_PAYLOAD];
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..]).await?;
        if read == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        filled += read;
        if let Some((header, used)) = parse(&buffer[..filled])? {
            buffer.truncate(filled);
            return Ok((header, buffer.split_off(used)));
        }
    }
}

/// Parses the header at the start of `bytes`: `None` while more bytes are needed to decide,
/// else the header and how many bytes it took. Never needs more than
/// `16 + V2_MAX_PAYLOAD` bytes to answer.
pub fn parse(bytes: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    if bytes.starts_with(V1_PREFIX) {
        parse_v1(bytes)
    } else if bytes.starts_with(V2_SIGNATURE) {
        parse_v2(bytes)
    } else if V1_PREFIX.starts_with(bytes) || V2_SIGNATURE.starts_with(bytes) {
        Ok(None)
    } else {
        Err(ProxyHeaderError::Missing)
    }
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(bytes: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    let window = &bytes[..bytes.len().min(V1_MAX_BYTES)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return match bytes.len() >= V1_MAX_BYTES {
            true => Err(ProxyHeaderError::BadV1("no CRLF within 107 bytes")),
            false => Ok(None),
        };
    };
    let line = std::str::from_utf8(&bytes[V1_PREFIX.len()..end])
        .map_err(|_| ProxyHeaderError::BadV1("not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["UNKNOWN", ..] => Header::Local,
        [protocol @ ("TCP4" | "TCP6"), source, destination, source_port, destination_port] => {
            let v4 = *protocol == "TCP4";
            // The destination is the balancer's own front: checked for its syntax only.
            v1_address(destination, destination_port, v4)?;
            Header::Proxied(v1_address(source, source_port, v4)?)
        }
        ["TCP4" | "TCP6", ..] => return Err(ProxyHeaderError::BadV1("not five fields")),
        _ => return Err(ProxyHeaderError::BadV1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some((header, end + 2)))
}

/// A version 1 address and port, of the family the protocol field named.
fn v1_address(ip: &str, port: &str, v4: bool) -> Result<SocketAddr, ProxyHeaderError> {
    let ip: IpAddr = match v4 {
        true => ip.parse::<Ipv4Addr>().map(IpAddr::V4),
        false => ip.parse::<Ipv6Addr>().map(IpAddr::V6),
    }
    .map_err(|_| ProxyHeaderError::BadV1("an address is not of the protocol's family"))?;
    let digits = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let port = port.parse::<u16>().ok().filter(|_| digits).ok_or(ProxyHeaderError::BadV1("bad port"))?;
    Ok(SocketAddr::new(ip, port))
}

/// The 12-byte signature, version and command, family and transport, length, addresses, TLVs.
fn parse_v2(bytes: &[u8]) -> Result<Option<(Header, usize)>, ProxyHeaderError> {
    if bytes.len() < V2_FIXED {
        return Ok(None);
    }
    let (version, command) = (bytes[12] >> 4, bytes[12] & 0x0f);
    if version != 2 {
        return Err(ProxyHeaderError::BadV2("version is not 2"));
    }
    let length = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if length > V2_MAX_PAYLOAD {
        return Err(ProxyHeaderError::TooLong(length));
    }
    let Some(payload) = bytes.get(V2_FIXED..V2_FIXED + length) else {
        return Ok(None);
    };
    let header = match command {
        0x0 => Header::Local,
        0x1 => v2_address(bytes[13], payload)?,
        _ => return Err(ProxyHeaderError::BadV2("command is neither LOCAL nor PROXY")),
    };
    Ok(Some((header, V2_FIXED + length)))
}

/// The source address of a `PROXY` command, from its family and transport byte.
fn v2_address(family: u8, payload: &[u8]) -> Result<Header, ProxyHeaderError> {
    let short = ProxyHeaderError::BadV2("addresses shorter than their family needs");
    match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let block: &[u8; 12] = payload.get(..12).and_then(|b| b.try_into().ok()).ok_or(short)?;
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            Ok(Header::Proxied(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([block[8], block[9]]))))
        }
        // TCP over IPv6, laid out the same way.
        0x21 => {
            let block: &[u8; 36] = payload.get(..36).and_then(|b| b.try_into().ok()).ok_or(short)?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&block[..16]);
            let port = u16::from_be_bytes([block[32], block[33]]);
            Ok(Header::Proxied(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)))
        }
        // Unspecified family, or Unix stream sockets: no IP address to learn.
        0x00 | 0x31 => Ok(Header::Local),
        _ => Err(ProxyHeaderError::BadV2("not a TCP or Unix stream")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend([0x20 | command, family]);
        bytes.extend(u16::try_from(payload.len()).expect("short payload").to_be_bytes());
        bytes.extend(payload);
        bytes
    }

    fn v2_tcp4() -> Vec<u8> {
        v2(1, 0x11, &[10, 1, 2, 3, 192, 168, 0, 1, 0x30, 0x39, 0x01, 0xbb])
    }

    fn parsed(bytes: &[u8]) -> (Header, usize) {
        parse(bytes).expect("parses").expect("complete")
    }

    fn refused(bytes: &[u8]) -> String {
        match parse(bytes) {
            Err(e) => e.to_string(),
            Ok(answer) => panic!("{bytes:?} was not refused: {answer:?}"),
        }
    }

    #[test]
    fn v1_names_the_client_of_ipv4_and_ipv6_connections() {
        let line = b"PROXY TCP4 10.1.2.3 192.168.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parsed(line), (Header::Proxied("10.1.2.3:56324".parse().unwrap()), 43));
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n";
        assert_eq!(parsed(line), (Header::Proxied("[2001:db8::7]:1".parse().unwrap()), line.len()));
        let line = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(parsed(line), (Header::Local, line.len()));
        assert_eq!(parsed(b"PROXY UNKNOWN\r\n"), (Header::Local, 15));
    }

    #[test]
    fn v2_names_the_client_of_ipv4_and_ipv6_connections_and_skips_tlvs() {
        let header = v2_tcp4();
        let mut bytes = header.clone();
        bytes.extend(b"GET /");
        assert_eq!(parsed(&bytes), (Header::Proxied("10.1.2.3:12345".parse().unwrap()), header.len()));
        let mut payload = vec![0u8; 36];
        payload[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        payload[32..34].copy_from_slice(&8080u16.to_be_bytes());
        payload.extend([0x04, 0x00, 0x02, b'h', b'2']);
        let header = v2(1, 0x21, &payload);
        assert_eq!(parsed(&header), (Header::Proxied("[2001:db8::7]:8080".parse().unwrap()), header.len()));
    }

    #[test]
    fn v2_local_and_addressless_headers_leave_the_peer_as_the_client() {
        assert_eq!(parsed(&v2(0, 0x00, &[])), (Header::Local, 16));
        assert_eq!(parsed(&v2(0, 0x11, &[0; 12])).0, Header::Local, "LOCAL ignores addresses");
        assert_eq!(parsed(&v2(1, 0x00, &[])).0, Header::Local);
        assert_eq!(parsed(&v2(1, 0x31, &[0; 216])).0, Header::Local);
    }

    #[test]
    fn truncated_headers_ask_for_more_at_every_length() {
        let v1 = b"PROXY TCP4 10.1.2.3 192.168.0.1 56324 443\r\n";
        for whole in [&v1[..], &v2_tcp4()] {
            for cut in 0..whole.len() {
                assert!(parse(&whole[..cut]).expect("no error on a prefix").is_none(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn garbage_and_malformed_headers_are_refused_with_the_reason() {
        assert!(refused(b"GET / HTTP/1.1\r\n").contains("does not start with a PROXY"));
        assert!(refused(b"\x16\x03\x01").contains("does not start with a PROXY"), "a TLS hello");
        assert!(refused(b"PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n").contains("not TCP4, TCP6 or UNKNOWN"));
        assert!(refused(b"PROXY TCP4 1.2.3.4 1.2.3.5 1\r\n").contains("five fields"));
        assert!(refused(b"PROXY TCP4 1.2.3.4  1.2.3.5 1 2\r\n").contains("v1"));
        assert!(refused(b"PROXY TCP4 ::1 1.2.3.5 1 2\r\n").contains("family"));
        assert!(refused(b"PROXY TCP6 ::1 1.2.3.5 1 2\r\n").contains("family"));
        assert!(refused(b"PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n").contains("bad port"));
        assert!(refused(b"PROXY TCP4 1.2.3.4 1.2.3.5 +1 2\r\n").contains("bad port"));
        assert!(refused(b"PROXY TCP4 1.2.3.4 1.2.3.5 1 \r\n").contains("bad port"));
        assert!(refused(b"PROXY \xff\r\n").contains("not ASCII"));
        assert!(refused(&[b"PROXY ".as_slice(), &[b'1'; 120]].concat()).contains("107"));
        let mut wrong_version = v2_tcp4();
        wrong_version[12] = 0x11;
        assert!(refused(&wrong_version).contains("version"));
        assert!(refused(&v2(2, 0x11, &[0; 12])).contains("command"));
        assert!(refused(&v2(1, 0x12, &[0; 12])).contains("stream"), "UDP");
        assert!(refused(&v2(1, 0x11, &[0; 11])).contains("shorter"));
        assert!(refused(&v2(1, 0x21, &[0; 12])).contains("shorter"));
        let mut too_long = v2(1, 0x11, &[]);
        too_long[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert!(refused(&too_long).contains("2000 bytes"));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 { V2_SIGNATURE.to_vec() } else { V1_PREFIX.to_vec() };
            for _ in 0..(round % 70) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state.to_le_bytes()[0]);
            }
            let _ = parse(&bytes);
        }
    }

    #[tokio::test]
    async fn read_header_keeps_the_bytes_after_it() {
        let mut bytes = v2_tcp4();
        bytes.extend(b"GET / HTTP/1.1\r\n");
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            // In small pieces, as a slow network would deliver them.
            for piece in bytes.chunks(5) {
                tokio::io::AsyncWriteExt::write_all(&mut client, piece).await.expect("write");
            }
            client
        });
        let (header, rest) = read_header(&mut server, HEADER_TIMEOUT).await.expect("a header");
        assert_eq!(header, Header::Proxied("10.1.2.3:12345".parse().unwrap()));
        let _client = writer.await.expect("writer");
        let mut more = vec![0u8; 16 - rest.len()];
        server.read_exact(&mut more).await.expect("the rest");
        assert_eq!([rest, more].concat(), b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn read_header_gives_up_on_silence_and_on_a_closed_connection() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let silent = read_header(&mut server, Duration::from_millis(50)).await;
        assert!(matches!(silent, Err(ProxyHeaderError::Timeout(_))), "{silent:?}");
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4").await.expect("write");
        drop(client);
        let closed = read_header(&mut server, HEADER_TIMEOUT).await;
        assert!(matches!(closed, Err(ProxyHeaderError::Closed)), "{closed:?}");
    }
}
