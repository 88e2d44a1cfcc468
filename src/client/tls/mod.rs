//! The TLS client for `wss://` (SPEC §8): `goclaw node` and the operator
//! commands. Blocking, over any `Read + Write` (the client's connected,
//! deadline-aware socket), with rustls 0.23 and its `ring` provider; built
//! only with the `tls` cargo feature (on by default). Never used by the
//! gateway, which stays plain `ws://` behind a TLS-terminating proxy.
//!
//! Trust, in the order the options are looked at:
//! - `pin_sha256`: the leaf certificate's DER must hash to it. Alone it is
//!   the whole trust decision (self-signed gateways): no CA, name or date
//!   check, but the handshake signature is still verified against the
//!   pinned certificate's key. With `ca_file` as well, both must pass.
//! - `ca_file`: a PEM bundle that replaces the system's roots.
//! - otherwise the system's roots: `$SSL_CERT_FILE`, else the first bundle
//!   found among the usual paths (Debian/Ubuntu/Alpine/Arch and distroless
//!   `/etc/ssl/certs/ca-certificates.crt`, Fedora/RHEL, openSUSE, …).
//!
//! Errors are [`TlsError`], whose `Display` is a sentence for the user.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ClientConnection, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme, StreamOwned};
use sha2::{Digest as _, Sha256};

use crate::client::trust::TlsSettings;

/// Where the system's CA bundle is looked for, after `$SSL_CERT_FILE`.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch, Gentoo, distroless
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // Fedora, RHEL 7+
    "/etc/pki/tls/certs/ca-bundle.crt",   // older Fedora/RHEL/CentOS
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine, OpenBSD, macOS
];

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The name the certificate must be valid for: the URL's host (a DNS
    /// name, or an IP address without brackets).
    pub server_name: String,
    /// `--ca-file`: trust these roots instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// `--pin-sha256`: SHA-256 of the leaf certificate's DER.
    pub pin_sha256: Option<[u8; 32]>,
}

impl TlsOptions {
    fn of(server_name: &str, settings: &TlsSettings) -> TlsOptions {
        TlsOptions {
            server_name: server_name.to_string(),
            ca_file: settings.ca_file.clone(),
            pin_sha256: settings.pin_sha256,
        }
    }
}

/// The stream the WebSocket runs over.
pub type TlsStream<S> = StreamOwned<ClientConnection, S>;

/// Why there is no TLS connection. `Display` is what the user reads.
#[derive(Debug)]
pub enum TlsError {
    /// The server name is not a DNS name or an IP address.
    BadServerName(String),
    /// No CA bundle: the system has none where we looked, or `--ca-file`
    /// cannot be read or holds no certificate.
    Roots(String),
    /// The certificate chain does not lead to a trusted root.
    NotTrusted { server: String, ca_file: Option<PathBuf> },
    /// The certificate is not valid for the name we connected to.
    WrongName { server: String, presented: Vec<String> },
    /// The certificate has expired (or is not yet valid).
    Expired { server: String, detail: String },
    /// The leaf does not hash to the pinned fingerprint.
    PinMismatch { expected: [u8; 32], got: [u8; 32] },
    /// Any other certificate problem (bad encoding, bad signature, ...).
    BadCertificate { server: String, detail: String },
    /// The handshake failed for another TLS reason (alert, protocol).
    Handshake(rustls::Error),
    /// The socket failed (timeout, reset, EOF during the handshake).
    Io(io::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadServerName(name) => write!(f, "{name:?} is not a valid TLS server name"),
            Self::Roots(why) => f.write_str(why),
            Self::NotTrusted { server, ca_file: None } => write!(
                f,
                "certificate for {server} is not trusted by the system's roots; pass --ca-file or --pin-sha256"
            ),
            Self::NotTrusted { server, ca_file: Some(path) } => write!(
                f,
                "certificate for {server} is not signed by a CA in {}; check --ca-file, or pass --pin-sha256",
                path.display()
            ),
            Self::WrongName { server, presented } if presented.is_empty() => {
                write!(f, "certificate is not valid for {server} (it names no host)")
            }
            Self::WrongName { server, presented } => {
                write!(f, "certificate is not valid for {server}; it is for {}", presented.join(", "))
            }
            Self::Expired { server, detail } => write!(f, "certificate for {server} {detail}"),
            Self::PinMismatch { expected, got } => write!(
                f,
                "certificate fingerprint mismatch: expected sha256 {}, got {}",
                fingerprint(expected),
                fingerprint(got)
            ),
            Self::BadCertificate { server, detail } => write!(f, "certificate for {server} rejected: {detail}"),
            Self::Handshake(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
                f.write_str("TLS handshake failed: the server does not speak TLS there (a plain ws:// gateway?)")
            }
            Self::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
            Self::Io(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => f.write_str("TLS handshake failed: timed out"),
                io::ErrorKind::UnexpectedEof => f.write_str("TLS handshake failed: the server closed the connection"),
                _ => write!(f, "TLS handshake failed: {e}"),
            },
        }
    }
}

impl std::error::Error for TlsError {}

/// Connects TLS over `sock` to `server_name` and completes the handshake
/// before returning, so certificate errors surface here and not at the
/// first read. The config is built once per process and settings (loading
/// the system bundle parses ~150 certificates) and reused on reconnects.
///
/// # Errors
/// [`TlsError`], whose `Display` says what to do.
pub fn connect<S: Read + Write>(sock: S, server_name: &str, settings: &TlsSettings) -> Result<TlsStream<S>, TlsError> {
    static CACHE: Mutex<Option<(TlsSettings, Arc<ClientConfig>)>> = Mutex::new(None);
    let options = TlsOptions::of(server_name, settings);
    let cached = CACHE.lock().as_ref().filter(|(s, _)| s == settings).map(|(_, config)| config.clone());
    let config = match cached {
        Some(config) => config,
        None => {
            let config = client_config(&options)?;
            *CACHE.lock() = Some((settings.clone(), config.clone()));
            config
        }
    };
    connect_with(sock, config, &options)
}

/// As [`connect`] with a config from [`client_config`] (build it once and
/// reuse it: loading the system bundle parses ~150 certificates).
pub fn connect_with<S: Read + Write>(
    mut sock: S,
    config: Arc<ClientConfig>,
    options: &TlsOptions,
) -> Result<TlsStream<S>, TlsError> {
    let name = ServerName::try_from(options.server_name.clone())
        .map_err(|_| TlsError::BadServerName(options.server_name.clone()))?;
    let mut conn = ClientConnection::new(config, name).map_err(TlsError::Handshake)?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            return Err(explain(e, options));
        }
    }
    Ok(StreamOwned::new(conn, sock))
}

/// The rustls config for these options.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Handshake)?;
    let webpki = |roots: RootCertStore| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::Roots(format!("cannot use the CA certificates: {e}")))
    };
    let config = match (&options.pin_sha256, &options.ca_file) {
        (Some(pin), ca_file) => {
            let inner = match ca_file {
                Some(path) => Some(webpki(load_roots(path, true)?)?),
                None => None,
            };
            let verifier = PinnedVerifier { pin: *pin, inner, provider: provider.clone() };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
        }
        (None, Some(path)) => builder.with_webpki_verifier(webpki(load_roots(path, true)?)?).with_no_client_auth(),
        (None, None) => builder.with_webpki_verifier(webpki(system_roots()?)?).with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The crypto: ring's provider (TLS 1.3 and 1.2; X25519, P-256, P-384 key
/// exchange; AES-GCM and ChaCha20-Poly1305; RSA, ECDSA, Ed25519 signatures).
///
/// rustls 0.23.48 deprecated this function because ring has no post-quantum
/// key exchange (X25519MLKEM768); rustls 0.24 moves the same provider to the
/// `rustls-ring` crate. A PQ hybrid protects recorded traffic against a
/// future quantum computer; it is not needed to authenticate the gateway.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's roots: `$SSL_CERT_FILE`, else the first of
/// [`SYSTEM_BUNDLES`] that exists.
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
        return load_roots(Path::new(&path), false);
    }
    for path in SYSTEM_BUNDLES {
        let path = Path::new(path);
        if path.is_file() {
            return load_roots(path, false);
        }
    }
    Err(TlsError::Roots(format!(
        "no system CA bundle (looked at {}); install ca-certificates, set SSL_CERT_FILE, or pass --ca-file or --pin-sha256",
        SYSTEM_BUNDLES.join(", ")
    )))
}

/// Every parsable certificate in a PEM file. Unparsable ones are skipped
/// (system bundles may hold certificates webpki cannot use); none usable is
/// an error.
fn load_roots(path: &Path, is_ca_file: bool) -> Result<RootCertStore, TlsError> {
    let what = if is_ca_file { "--ca-file " } else { "CA bundle " };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Roots(format!("cannot read {what}{}: {}", path.display(), pem_error(e))))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Roots(format!("cannot read {what}{}: {}", path.display(), pem_error(e))))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::Roots(format!("{what}{} holds no usable PEM certificate", path.display())));
    }
    Ok(roots)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

/// Turns rustls's error into one the user can act on.
fn explain(e: io::Error, options: &TlsOptions) -> TlsError {
    let server = options.server_name.clone();
    // complete_io wraps rustls's own errors in io::ErrorKind::InvalidData.
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return TlsError::Io(e); // the socket: timeout, reset, EOF
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => TlsError::NotTrusted { server, ca_file: options.ca_file.clone() },
            CertificateError::NotValidForName => TlsError::WrongName { server, presented: Vec::new() },
            CertificateError::NotValidForNameContext { presented, .. } => {
                TlsError::WrongName { server, presented: presented.iter().filter_map(|n| plain_name(n)).collect() }
            }
            CertificateError::Expired => TlsError::Expired { server, detail: "has expired".into() },
            CertificateError::ExpiredContext { not_after, .. } => {
                TlsError::Expired { server, detail: format!("expired at {}", utc(*not_after)) }
            }
            CertificateError::NotValidYet => TlsError::Expired { server, detail: "is not valid yet".into() },
            CertificateError::NotValidYetContext { not_before, .. } => TlsError::Expired {
                server,
                detail: format!("is not valid until {} (check this machine's clock)", utc(*not_before)),
            },
            CertificateError::Other(OtherError(inner)) => match inner.downcast_ref::<PinMismatch>() {
                Some(m) => TlsError::PinMismatch { expected: m.expected, got: m.got },
                // webpki::Error::CaUsedAsEndEntity, which rustls passes on
                // as Other: `openssl req -x509` makes CA:TRUE certificates.
                None if inner.to_string() == "CaUsedAsEndEntity" => TlsError::BadCertificate {
                    server,
                    detail: "it is a CA certificate (self-signed?); trust it with --pin-sha256 instead".into(),
                },
                None => TlsError::BadCertificate { server, detail: inner.to_string() },
            },
            other => TlsError::BadCertificate { server, detail: describe(other) },
        },
        other => TlsError::Handshake(other.clone()),
    }
}

/// webpki reports the names in Debug form: `DnsName("a.example")`,
/// `IpAddress(192.0.2.1)`. Keeps the name; drops other kinds (URIs, ...).
fn plain_name(debug: &str) -> Option<String> {
    if let Some(rest) = debug.strip_prefix("DnsName(\"") {
        return rest.strip_suffix("\")").map(str::to_owned);
    }
    debug.strip_prefix("IpAddress(")?.strip_suffix(')').map(str::to_owned)
}

fn describe(e: &CertificateError) -> String {
    match e {
        CertificateError::BadEncoding => "it is not a valid X.509 certificate".into(),
        // A certificate's signature, or the handshake's (CertificateVerify).
        CertificateError::BadSignature => "a signature does not verify".into(),
        CertificateError::Revoked => "it has been revoked".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not for TLS servers".into()
        }
        other => format!("{other:?}"),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, Howard Hinnant's algorithm).
fn utc(t: UnixTime) -> String {
    let secs = t.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Colon-separated uppercase hex, as `openssl x509 -fingerprint -sha256`
/// prints it.
pub fn fingerprint(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// SHA-256 of a certificate's DER.
pub fn cert_sha256(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

#[derive(Debug)]
struct PinMismatch {
    expected: [u8; 32],
    got: [u8; 32],
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fingerprint {} is not the pinned {}", fingerprint(&self.got), fingerprint(&self.expected))
    }
}

impl std::error::Error for PinMismatch {}

/// Trusts the one certificate whose DER hashes to `pin` (after `inner`, the
/// CA check, when there is one). The handshake signatures are verified with
/// the provider's algorithms against that certificate's key, so a peer that
/// only replays the certificate without its private key fails.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(inner) = &self.inner {
            inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        let got = cert_sha256(end_entity);
        // Public values: no need for a constant-time comparison.
        if got != self.pin {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                PinMismatch { expected: self.pin, got },
            )))));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
