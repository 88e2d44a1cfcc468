//! Helpers for the tests of the client commands run as the binary (a
//! background one is `support::Background`): a scratch folder per test
//! (removed at its end), `goclaw` runs with their own HOME, and relays in
//! front of a gateway: one that makes every connection look remote (it adds
//! `X-Forwarded-For` to the upgrade, as a reverse proxy does) and one that
//! terminates TLS (a rustls server with certificates `openssl` makes at test
//! time), as the TLS proxy of SPEC §8.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_goclaw");

/// A folder for one test, removed when it ends.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("goclaw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    /// A sub-folder's path (not created).
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    /// `goclaw ARGS` to completion, with a clean environment whose HOME is
    /// `home` in this folder (operators keep their device key there), plus `env`.
    pub fn goclaw(&self, home: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(BIN);
        command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        command.env("HOME", self.path(home));
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A relay listening on loopback; its threads end with the test process.
pub struct Relay {
    pub addr: SocketAddr,
}

/// Copies one direction until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// A relay to `upstream` that adds `X-Forwarded-For: 203.0.113.7` to each
/// upgrade request: the gateway sees a proxied, so non-local, client.
pub fn forwarded(upstream: SocketAddr) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match client.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let Ok(mut server) = TcpStream::connect(upstream) else { return };
                head.truncate(head.len() - 2);
                head.extend_from_slice(b"X-Forwarded-For: 203.0.113.7\r\n\r\n");
                if server.write_all(&head).is_err() {
                    return;
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || pipe(s2, c2));
                pipe(client, server);
            });
        }
    });
    Relay { addr }
}

/// Throwaway certificates made with `openssl`: a self-signed one (as
/// `openssl req -x509` makes it) and a CA with a leaf for localhost and
/// 127.0.0.1.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("leaf.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        for args in [
            format!(
                "req -x509 {ec} -keyout self.key -out self.pem -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost"
            ),
            format!("req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=goclaw-test-CA"),
            format!("req {ec} -keyout leaf.key -out leaf.csr -subj /CN=leaf"),
            "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile leaf.ext"
                .to_string(),
        ] {
            let out = Command::new("openssl").args(args.split(' ')).current_dir(dir).output().expect("openssl");
            assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Pki { dir: dir.to_path_buf() }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    /// What `openssl x509 -noout -fingerprint -sha256` prints for `pem`.
    pub fn fingerprint(&self, pem: &str) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", &self.path(pem)])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

/// A TLS-terminating relay to `upstream` presenting `cert` (with `key`),
/// listening on `ip` (a loopback address).
#[cfg(feature = "tls")]
pub fn tls(upstream: SocketAddr, pki: &Pki, cert: &str, key: &str, ip: &str) -> Relay {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    let certs = vec![CertificateDer::from_pem_file(pki.path(cert)).unwrap()];
    let key = PrivateKeyDer::from_pem_file(pki.path(key)).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let config = config.clone();
            thread::spawn(move || {
                let Ok(server) = TcpStream::connect(upstream) else { return };
                let conn = rustls::ServerConnection::new(config).unwrap();
                pump(rustls::StreamOwned::new(conn, client), server);
            });
        }
    });
    Relay { addr }
}

/// Both directions on one thread (a rustls connection cannot be split):
/// short read timeouts on both sockets, turn by turn.
#[cfg(feature = "tls")]
fn pump(mut tls: rustls::StreamOwned<rustls::ServerConnection, TcpStream>, mut server: TcpStream) {
    let tick = Some(std::time::Duration::from_millis(5));
    if tls.sock.set_read_timeout(tick).is_err() || server.set_read_timeout(tick).is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    let idle = |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => break,
        }
        match server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                    break;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => break,
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
}
