//! The TLS client against `openssl s_server` with throwaway certificates
//! made by `openssl` at test time (it must be on PATH; Debian: `openssl`),
//! and against a rustls server that replays a pinned certificate.

use super::*;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn read_der_sha256(&self, pem: &str) -> [u8; 32] {
        let cert = CertificateDer::from_pem_file(self.path(pem)).unwrap();
        cert_sha256(&cert)
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl on PATH");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a leaf for localhost/127.0.0.1 signed by it, an expired leaf,
/// a leaf for another name, and a self-signed certificate.
fn pki() -> Pki {
    static MADE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    // Under target/ (shared by every test of this process, so not removed
    // by any one of them): `cargo clean` takes it, /tmp is left alone.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp").join(format!("tls-test-{}", std::process::id()));
    if *made {
        return Pki { dir };
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ext = |name: &str, san: &str| {
        std::fs::write(
            dir.join(name),
            format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName={san}\n"),
        )
        .unwrap();
    };
    ext("leaf.ext", "DNS:localhost,IP:127.0.0.1");
    ext("other.ext", "DNS:gateway.example");
    let o = |args: &str| openssl(&dir, &args.split(' ').collect::<Vec<_>>());
    o(
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 3 -subj /CN=goclaw-test-CA",
    );
    o(
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca2.key -out ca2.pem -days 3 -subj /CN=another-CA",
    );
    for (name, ext, days) in [("leaf", "leaf.ext", "3"), ("other", "other.ext", "3")] {
        o(&format!(
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}"
        ));
        o(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days {days} -extfile {ext}"
        ));
    }
    // Expired (OpenSSL 3.0's x509 cannot set dates; `ca` can): an RSA
    // leaf valid on 2020-01-01 only.
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n",
    )
    .unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    o("req -newkey rsa:2048 -nodes -keyout expired.key -out expired.csr -subj /CN=expired");
    o(
        "ca -batch -notext -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem -startdate 20200101000000Z -enddate 20200102000000Z -extfile leaf.ext",
    );
    // Self-signed, openssl's defaults (CA:TRUE): what `openssl req -x509` gives a user.
    o(
        "req -x509 -newkey ed25519 -nodes -keyout self.key -out self.pem -days 3 -subj /CN=localhost -addext subjectAltName=DNS:localhost",
    );
    o("genpkey -algorithm ed25519 -out other-ed25519.key");
    *made = true;
    Pki { dir }
}

static PORT: AtomicU16 = AtomicU16::new(0);

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_server -www` with this certificate (and key) on a free port.
fn server(pki: &Pki, cert: &str, key: &str, extra: &[&str]) -> Server {
    let base = 20000 + (std::process::id() % 20000) as u16;
    for _ in 0..20 {
        let port = base + PORT.fetch_add(1, Ordering::Relaxed);
        let child = Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-www", "-cert"])
            .arg(pki.path(cert))
            .arg("-key")
            .arg(pki.path(key))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Server { child, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if server.child.try_wait().unwrap().is_some() {
                break; // port taken: try the next
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("openssl s_server did not start with {cert} and {key}");
}

fn tcp(server: &Server) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// One request; the stream is closed after it (s_server serves one
/// connection at a time).
fn get(mut stream: TlsStream<TcpStream>) -> String {
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = Vec::new();
    let _ = stream.read_to_end(&mut body); // s_server closes without close_notify
    String::from_utf8_lossy(&body).into_owned()
}

/// The connector with a config built for these options (no cache).
fn connect<S: Read + Write>(sock: S, o: &TlsOptions) -> Result<TlsStream<S>, TlsError> {
    connect_with(sock, client_config(o)?, o)
}

fn opts(name: &str) -> TlsOptions {
    TlsOptions { server_name: name.into(), ..Default::default() }
}

#[test]
fn ca_file_mode_connects_and_checks_name_and_dates() {
    let pki = pki();
    let s = server(&pki, "leaf.pem", "leaf.key", &[]);
    let o = TlsOptions { ca_file: Some(pki.path("ca.pem")), ..opts("localhost") };
    let stream = connect(tcp(&s), &o).expect("trusted through --ca-file");
    assert!(get(stream).contains("HTTP/1.0 200"), "s_server -www answers");
    // By IP address (the leaf names 127.0.0.1 too).
    let o = TlsOptions { ca_file: Some(pki.path("ca.pem")), ..opts("127.0.0.1") };
    drop(connect(tcp(&s), &o).expect("IP SAN"));
    // Hostname mismatch.
    let o = TlsOptions { ca_file: Some(pki.path("ca.pem")), ..opts("localhost") };
    let s2 = server(&pki, "other.pem", "other.key", &[]);
    let e = connect(tcp(&s2), &o).unwrap_err().to_string();
    assert_eq!(e, "certificate is not valid for localhost; it is for gateway.example");
    let o2 = TlsOptions { ca_file: Some(pki.path("ca.pem")), ..opts("127.0.0.2") };
    let e = connect(tcp(&s), &o2).unwrap_err().to_string();
    assert_eq!(e, "certificate is not valid for 127.0.0.2; it is for localhost, 127.0.0.1");
    // Expired.
    let s3 = server(&pki, "expired.pem", "expired.key", &[]);
    let e = connect(tcp(&s3), &o).unwrap_err().to_string();
    assert_eq!(e, "certificate for localhost expired at 2020-01-02 00:00:00 UTC");
    // A certificate from another CA.
    let o2 = TlsOptions { ca_file: Some(pki.path("ca2.pem")), ..opts("localhost") };
    let e = connect(tcp(&s), &o2).unwrap_err().to_string();
    let ca2 = pki.path("ca2.pem").display().to_string();
    assert_eq!(
        e,
        format!("certificate for localhost is not signed by a CA in {ca2}; check --ca-file, or pass --pin-sha256")
    );
    // A self-signed certificate as `openssl req -x509` makes it (CA:TRUE),
    // against any CA file, even itself: webpki refuses a CA certificate
    // as a server's.
    let s4 = server(&pki, "self.pem", "self.key", &[]);
    for ca in ["ca.pem", "self.pem"] {
        let o = TlsOptions { ca_file: Some(pki.path(ca)), ..opts("localhost") };
        let e = connect(tcp(&s4), &o).unwrap_err().to_string();
        assert_eq!(
            e,
            "certificate for localhost rejected: it is a CA certificate (self-signed?); trust it with --pin-sha256 instead"
        );
    }
}

#[test]
fn system_roots_mode_refuses_a_private_ca_with_advice() {
    let pki = pki();
    let s = server(&pki, "leaf.pem", "leaf.key", &[]);
    let roots = system_roots().expect("this machine has a CA bundle");
    assert!(roots.len() > 50, "{} roots", roots.len());
    let e = connect(tcp(&s), &opts("localhost")).unwrap_err().to_string();
    assert_eq!(e, "certificate for localhost is not trusted by the system's roots; pass --ca-file or --pin-sha256");
    // The usual self-signed gateway.
    let s = server(&pki, "self.pem", "self.key", &[]);
    let e = connect(tcp(&s), &opts("localhost")).unwrap_err().to_string();
    assert_eq!(
        e,
        "certificate for localhost rejected: it is a CA certificate (self-signed?); trust it with --pin-sha256 instead"
    );
}

#[test]
fn a_bundle_loaded_as_the_system_one_is_is_trusted() {
    // What system_roots does with $SSL_CERT_FILE, without setting the
    // variable (std::env::set_var is unsafe in edition 2024).
    let pki = pki();
    let s = server(&pki, "leaf.pem", "leaf.key", &[]);
    let roots = load_roots(&pki.path("ca.pem"), false).unwrap();
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    let stream = connect_with(tcp(&s), Arc::new(config), &opts("localhost")).unwrap();
    assert!(get(stream).contains("200"));
}

#[test]
fn pin_mode_trusts_a_self_signed_certificate_by_fingerprint() {
    let pki = pki();
    let s = server(&pki, "self.pem", "self.key", &[]);
    let pin = pki.read_der_sha256("self.pem");
    let o = TlsOptions { pin_sha256: Some(pin), ..opts("localhost") };
    let stream = connect(tcp(&s), &o).expect("pinned");
    assert!(get(stream).contains("200"));
    // The name is not checked in pin-only mode (the pin names the certificate).
    let o = TlsOptions { pin_sha256: Some(pin), ..opts("gateway.example") };
    drop(connect(tcp(&s), &o).expect("pin-only ignores the name"));
    // TLS 1.2 too (the handshake signature goes through verify_tls12_signature).
    let s12 = server(&pki, "leaf.pem", "leaf.key", &["-tls1_2"]);
    let o = TlsOptions { pin_sha256: Some(pki.read_der_sha256("leaf.pem")), ..opts("localhost") };
    let stream = connect(tcp(&s12), &o).expect("pinned over TLS 1.2");
    assert_eq!(stream.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert!(get(stream).contains("200"));
    // An expired certificate is still trusted by its pin.
    let s3 = server(&pki, "expired.pem", "expired.key", &[]);
    let o = TlsOptions { pin_sha256: Some(pki.read_der_sha256("expired.pem")), ..opts("localhost") };
    drop(connect(tcp(&s3), &o).expect("pin-only ignores dates"));
}

#[test]
fn pin_mismatch_names_both_fingerprints() {
    let pki = pki();
    let s = server(&pki, "self.pem", "self.key", &[]);
    let wrong = pki.read_der_sha256("leaf.pem");
    let got = pki.read_der_sha256("self.pem");
    let o = TlsOptions { pin_sha256: Some(wrong), ..opts("localhost") };
    let e = connect(tcp(&s), &o).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("certificate fingerprint mismatch: expected sha256 {}, got {}", fingerprint(&wrong), fingerprint(&got))
    );
}

#[test]
fn pin_with_a_ca_file_needs_both() {
    let pki = pki();
    let s = server(&pki, "leaf.pem", "leaf.key", &[]);
    let pin = pki.read_der_sha256("leaf.pem");
    let o = TlsOptions { pin_sha256: Some(pin), ca_file: Some(pki.path("ca.pem")), ..opts("localhost") };
    drop(connect(tcp(&s), &o).expect("CA and pin"));
    let o = TlsOptions { pin_sha256: Some(pin), ca_file: Some(pki.path("ca.pem")), ..opts("gateway.example") };
    let e = connect(tcp(&s), &o).unwrap_err().to_string();
    assert!(e.starts_with("certificate is not valid for gateway.example"), "{e}");
}

#[test]
fn a_replayed_certificate_without_its_key_fails_the_handshake_signature() {
    // A rustls server presents self.pem (so the pin matches) but signs
    // the handshake with another Ed25519 key; openssl s_server and
    // rustls's with_single_cert both refuse such a pair, so a resolver
    // hands it over as is.
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerConnection};
    use rustls::sign::CertifiedKey;
    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);
    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let pki = pki();
    let provider = provider();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::from_pem_file(pki.path("other-ed25519.key")).unwrap())
            .unwrap();
        let certified = CertifiedKey::new(vec![CertificateDer::from_pem_file(pki.path("self.pem")).unwrap()], key);
        let config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut conn = ServerConnection::new(config).unwrap();
            while conn.is_handshaking() {
                if conn.complete_io(&mut sock).is_err() {
                    break;
                }
            }
        });
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let o = TlsOptions { pin_sha256: Some(pki.read_der_sha256("self.pem")), ..opts("localhost") };
        let e = connect(sock, &o).unwrap_err().to_string();
        assert_eq!(e, "certificate for localhost rejected: a signature does not verify", "{version:?}");
        t.join().unwrap();
    }
}

#[test]
fn bad_options_are_explained() {
    let pki = pki();
    let o = TlsOptions { ca_file: Some(pki.path("nope.pem")), ..opts("localhost") };
    let e = client_config(&o).unwrap_err().to_string();
    assert!(e.starts_with("cannot read --ca-file ") && e.contains("nope.pem"), "{e}");
    let o = TlsOptions { ca_file: Some(pki.path("leaf.ext")), ..opts("localhost") };
    let e = client_config(&o).unwrap_err().to_string();
    assert!(e.ends_with("holds no usable PEM certificate"), "{e}");
    let s = server(&pki, "leaf.pem", "leaf.key", &[]);
    let o = TlsOptions { ca_file: Some(pki.path("ca.pem")), ..opts("bad name!") };
    let e = connect(tcp(&s), &o).unwrap_err().to_string();
    assert_eq!(e, "\"bad name!\" is not a valid TLS server name");
    // A plain-TCP peer that is not TLS.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let o = TlsOptions { ca_file: Some(pki.path("ca.pem")), ..opts("localhost") };
    let e = connect(sock, &o).unwrap_err().to_string();
    assert_eq!(e, "TLS handshake failed: the server does not speak TLS there (a plain ws:// gateway?)");
    t.join().unwrap();
    // A peer that accepts and says nothing: the caller's read timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let e = connect(sock, &o).unwrap_err().to_string();
    assert_eq!(e, "TLS handshake failed: timed out");
    drop(listener);
}

#[test]
fn utc_formats() {
    assert_eq!(utc(UnixTime::since_unix_epoch(Duration::from_secs(1_577_923_200))), "2020-01-02 00:00:00 UTC");
    assert_eq!(utc(UnixTime::since_unix_epoch(Duration::from_secs(951_827_696))), "2000-02-29 12:34:56 UTC");
}
