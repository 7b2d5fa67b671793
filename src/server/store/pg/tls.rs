//! TLS to PostgreSQL: what the `--store` URL asks for (`sslmode`, `sslrootcert`) and the one
//! connector every connection to the database is made with (the pool, the relay's two
//! connections, a store copy's reading transaction).
//!
//! What is supported, as libpq spells it in the URL's query:
//! - `sslmode=disable`: plain connections only.
//! - `sslmode=prefer` (the default): TLS when the server offers it, else plain.
//! - `sslmode=require`: TLS or no connection.
//! - `sslmode=verify-ca`: TLS, the certificate chain checked, the name not.
//! - `sslmode=verify-full`: TLS, the certificate chain and the server's name checked.
//! - `sslrootcert=FILE`: the PEM file of the CAs to trust; with it, `prefer` and `require` check
//!   the chain and the name too (stricter than libpq, which checks only the chain). Without it,
//!   `verify-ca` and `verify-full` trust the platform's roots, as the agent and the CLI do;
//!   `sslrootcert=system` asks for those explicitly (and for `verify-full`, as in libpq).
//!
//! `prefer` and `require` without `sslrootcert` encrypt but accept any certificate, as libpq
//! does. Client certificates (`sslcert`, `sslkey`) are not supported. TLS is never used on a
//! Unix socket.

use std::path::PathBuf;
use std::sync::Arc;

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector every connection to the database is made with; with `sslmode=disable` it
/// is never asked for TLS.
pub type Tls = MakeRustlsConnect;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Any certificate is accepted (the handshake's signature is still checked).
    Nothing,
    /// The chain must lead to a trusted root; the name is not checked.
    Chain,
    /// The chain must lead to a trusted root and name the host connected to.
    Full,
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The platform's roots.
    Platform,
    /// The certificates of a PEM file.
    File(PathBuf),
}

/// What the URL asks of TLS, beyond what `postgres::Config` understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// `disable`, `prefer` or `require` (`verify-ca` and `verify-full` are `require`).
    pub mode: SslMode,
    /// How the certificate is checked.
    pub verify: Verify,
    /// The roots it is checked against.
    pub roots: Roots,
}

/// Splits the TLS settings off a PostgreSQL URL: returns the URL for `postgres::Config` (with
/// `sslrootcert` removed and `verify-ca`/`verify-full` turned into `require`) and what was
/// asked.
pub fn split_url(url: &str) -> Result<(String, TlsOptions), String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let (mut kept, mut mode, mut root) = (Vec::new(), None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslrootcert" => root = Some(percent_decode(value)?),
            "sslmode" => mode = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let options = options(mode.as_deref(), root)?;
    let mode_text = match options.mode {
        SslMode::Disable => "disable",
        SslMode::Require => "require",
        _ => "prefer",
    };
    let mode_pair = format!("sslmode={mode_text}");
    kept.push(&mode_pair);
    Ok((format!("{base}?{}", kept.join("&")), options))
}

/// The options of `sslmode` (absent: `prefer`) with `sslrootcert` (absent: `None`).
fn options(mode: Option<&str>, root: Option<String>) -> Result<TlsOptions, String> {
    let roots = match root.as_deref() {
        None | Some("system") => Roots::Platform,
        Some("") => return Err("sslrootcert is empty".into()),
        Some(path) => Roots::File(PathBuf::from(path)),
    };
    let (mode, verify) = match (mode.unwrap_or("prefer"), &root) {
        ("disable", _) => (SslMode::Disable, Verify::Nothing),
        (_, Some(system)) if system == "system" && mode != Some("verify-full") => {
            return Err("sslrootcert=system needs sslmode=verify-full".into());
        }
        ("prefer", None) => (SslMode::Prefer, Verify::Nothing),
        // A root to check against means the operator wants TLS: no falling back to plain text,
        // which anyone on the path could force by answering "no TLS".
        ("prefer", Some(_)) => (SslMode::Require, Verify::Full),
        ("require", None) => (SslMode::Require, Verify::Nothing),
        ("require", Some(_)) => (SslMode::Require, Verify::Full),
        ("verify-ca", _) => (SslMode::Require, Verify::Chain),
        ("verify-full", _) => (SslMode::Require, Verify::Full),
        (other, _) => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    Ok(TlsOptions { mode, verify, roots })
}

/// The connector for `options`: rustls with the ring provider (the one the HTTPS side uses),
/// checking the server's certificate as they say.
pub fn connector(options: &TlsOptions) -> Result<Tls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match options.verify {
        Verify::Nothing => Arc::new(Lenient { chain: None, provider: Arc::clone(&provider) }),
        Verify::Chain => Arc::new(Lenient {
            chain: Some(trusting(&options.roots, &provider)?),
            provider: Arc::clone(&provider),
        }),
        Verify::Full => trusting(&options.roots, &provider)?,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A verifier of chain and name against `roots`.
fn trusting(roots: &Roots, provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, String> {
    match roots {
        Roots::Platform => {
            let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(provider))
                .map_err(|e| format!("cannot load the platform's certificate roots: {e}"))?;
            Ok(Arc::new(verifier))
        }
        Roots::File(path) => {
            let mut store = RootCertStore::empty();
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read sslrootcert {shown}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {shown}: {e}"))?;
                store.add(cert).map_err(|e| format!("sslrootcert {shown}: {e}"))?;
            }
            if store.is_empty() {
                return Err(format!("sslrootcert {shown} holds no PEM certificate"));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
                .build()
                .map(|verifier| verifier as Arc<dyn ServerCertVerifier>)
                .map_err(|e| format!("sslrootcert {shown}: {e}"))
        }
    }
}

/// Decodes `%XX` escapes (a path in a URL's query may carry them).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| format!("{text:?} has a bad %-escape"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// A verifier more lenient than a full check: with no `chain` verifier it accepts any
/// certificate (`prefer` and `require` without roots, as libpq); with one, it checks the chain
/// but not the name (`verify-ca`). Either way it checks that the server holds the key of the
/// certificate it sent.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<dyn ServerCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // The name is checked after the chain, so this error means the chain was good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsOptions) {
        split_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn the_default_is_prefer_without_checks() {
        let (url, options) = split("postgres://o@db/x");
        assert_eq!(url, "postgres://o@db/x?sslmode=prefer");
        assert_eq!((options.mode, options.verify), (SslMode::Prefer, Verify::Nothing));
    }

    #[test]
    fn a_root_file_means_chain_and_name_are_checked() {
        let (url, options) =
            split("postgres://o@db/x?connect_timeout=5&sslmode=require&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(url, "postgres://o@db/x?connect_timeout=5&sslmode=require");
        assert_eq!(options.verify, Verify::Full);
        assert_eq!(options.roots, Roots::File("/etc/ca.pem".into()));
    }

    #[test]
    fn prefer_with_a_root_file_insists_on_tls() {
        let (url, options) = split("postgres://o@db/x?sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(url, "postgres://o@db/x?sslmode=require");
        assert_eq!((options.mode, options.verify), (SslMode::Require, Verify::Full));
    }

    #[test]
    fn verify_modes_become_require_for_the_driver() {
        let (url, options) = split("postgres://o@db/x?sslmode=verify-ca");
        assert_eq!(url, "postgres://o@db/x?sslmode=require");
        assert_eq!((options.verify, options.roots), (Verify::Chain, Roots::Platform));
        let (_, options) = split("postgres://o@db/x?sslmode=verify-full&sslrootcert=system");
        assert_eq!((options.mode, options.verify), (SslMode::Require, Verify::Full));
    }

    #[test]
    fn unknown_modes_and_bad_roots_are_refused() {
        for (url, says) in [
            ("postgres://o@db/x?sslmode=allow", "sslmode=allow is not one of"),
            ("postgres://o@db/x?sslmode=require&sslrootcert=system", "needs sslmode=verify-full"),
            ("postgres://o@db/x?sslrootcert=", "sslrootcert is empty"),
            ("postgres://o@db/x?sslrootcert=%zz", "bad %-escape"),
        ] {
            let err = split_url(url).expect_err(url);
            assert!(err.contains(says), "{url}: {err}");
        }
        let missing = TlsOptions {
            mode: SslMode::Require,
            verify: Verify::Full,
            roots: Roots::File("/nonexistent/ca.pem".into()),
        };
        let err = connector(&missing).err().expect("a missing file is refused");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
