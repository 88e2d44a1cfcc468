//! goclaw's own device identity as a client (SPEC §4.4, OPENCLAW.md §9(c)):
//! the Ed25519 key made on first start and kept in the state directory, and
//! the device tokens gateways issued to it, per gateway URL and role. The
//! node agent and the operator commands each keep theirs in a folder of
//! their own (`node/`, `cli/`), beside the gateway's `pairing.json` and
//! `logs/` when they share a directory.
//!
//! Files are 0600 in 0700 folders and written atomically (temp file, fsync,
//! rename or link, fsync of the folder). A key is created only where none
//! exists (two processes starting at once agree on one); one that exists
//! but cannot be used stops the command with one line naming it, and is
//! never replaced. Nothing here prints a key or a token.

use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::error::ClientError;
use crate::util::durable::{self, sync_dir, write_temp};
use crate::util::unix_ms;
use crate::wire::auth::Token;
use crate::wire::device::{DeviceKey, b64url, decode_lenient};

/// The node agent's folder in the state directory.
pub const NODE_DIR: &str = "node";
/// The operator commands' folder in the state directory.
pub const CLI_DIR: &str = "cli";
/// The key file in that folder.
pub const KEY_FILE: &str = "device.json";
/// The device tokens file in that folder.
pub const TOKENS_FILE: &str = "device-tokens.json";
/// Largest file read back; both are a few hundred bytes.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Most device tokens kept (gateway URL and role pairs); the least
/// recently issued goes first.
pub const MAX_STORED_TOKENS: usize = 32;
/// The only format version written and read.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyFile {
    version: u32,
    device_id: String,
    public_key: String,
    /// The 32-byte Ed25519 seed (RFC 8032 private key), base64url.
    private_key: String,
    created_at_ms: u64,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokensFile {
    version: u32,
    device_id: String,
    tokens: Vec<TokenEntry>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenEntry {
    gateway: String,
    role: String,
    token: String,
    updated_at_ms: u64,
}

/// A client's device: its key and the tokens gateways gave it.
pub struct DeviceState {
    dir: PathBuf,
    key: DeviceKey,
    device_id: String,
    tokens: Vec<TokenEntry>,
}

impl fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceState").field("dir", &self.dir).field("device_id", &self.device_id).finish()
    }
}

impl DeviceState {
    /// Opens the device in `dir` (created 0700 if missing): reads its key,
    /// or makes one if there is none, and reads its stored tokens.
    ///
    /// # Errors
    /// [`ClientError::State`], one line naming the file: a folder that
    /// cannot be made, a key file that cannot be read, parsed or trusted
    /// (others may read it), a key that cannot be written.
    pub fn open(dir: &Path) -> Result<DeviceState, ClientError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| state_error(dir, &format!("cannot create the folder: {e}")))?;
        let key_path = dir.join(KEY_FILE);
        let key = match read_bounded(&key_path)? {
            Some(bytes) => parse_key(&key_path, &bytes)?,
            None => create_key(&key_path)?,
        };
        let device_id = key.device_id();
        let tokens_path = dir.join(TOKENS_FILE);
        let tokens = match read_bounded(&tokens_path)? {
            Some(bytes) => {
                let file: TokensFile = serde_json::from_slice(&bytes)
                    .map_err(|e| state_error(&tokens_path, &format!("is not a device tokens file ({e})")))?;
                // Tokens of another key (the key file was replaced by hand)
                // are worthless; they are dropped at the next write.
                if file.device_id == device_id { file.tokens } else { Vec::new() }
            }
            None => Vec::new(),
        };
        Ok(DeviceState { dir: dir.to_path_buf(), key, device_id, tokens })
    }

    /// The signing key.
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// The device id (hex SHA-256 of the public key).
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The key file's path, for messages.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// The device token `gateway` issued for `role`, if one is stored.
    pub fn token(&self, gateway: &str, role: &str) -> Option<Token> {
        let entry = self.tokens.iter().find(|t| t.gateway == gateway && t.role == role)?;
        Token::new("device token", entry.token.clone()).ok()
    }

    /// Stores the device token `gateway` issued for `role` (a write only if
    /// it changed).
    ///
    /// # Errors
    /// [`ClientError::State`] when the file cannot be written.
    pub fn store_token(&mut self, gateway: &str, role: &str, token: &str) -> Result<(), ClientError> {
        if self.token(gateway, role).is_some_and(|t| t.secret() == token) {
            return Ok(());
        }
        self.tokens.retain(|t| !(t.gateway == gateway && t.role == role));
        if self.tokens.len() >= MAX_STORED_TOKENS {
            self.tokens.sort_by_key(|t| std::cmp::Reverse(t.updated_at_ms));
            self.tokens.truncate(MAX_STORED_TOKENS - 1);
        }
        let entry = TokenEntry {
            gateway: gateway.to_string(),
            role: role.to_string(),
            token: token.to_string(),
            updated_at_ms: unix_ms(),
        };
        self.tokens.push(entry);
        self.write_tokens()
    }

    /// Forgets the device token for `gateway` and `role` (the gateway
    /// refused it); true if there was one.
    ///
    /// # Errors
    /// [`ClientError::State`] when the file cannot be written.
    pub fn clear_token(&mut self, gateway: &str, role: &str) -> Result<bool, ClientError> {
        let before = self.tokens.len();
        self.tokens.retain(|t| !(t.gateway == gateway && t.role == role));
        if self.tokens.len() == before {
            return Ok(false);
        }
        self.write_tokens().map(|()| true)
    }

    fn write_tokens(&self) -> Result<(), ClientError> {
        let file = TokensFile { version: VERSION, device_id: self.device_id.clone(), tokens: self.tokens.clone() };
        let path = self.dir.join(TOKENS_FILE);
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| state_error(&path, &e.to_string()))?;
        replace(&path, &bytes).map_err(|e| state_error(&path, &format!("cannot be written: {e}")))
    }
}

fn state_error(path: &Path, why: &str) -> ClientError {
    ClientError::State(format!("{}: {why}", path.display()))
}

/// The file's bytes, `None` if it does not exist. Refuses a file that is
/// not a regular file, is larger than [`MAX_FILE_BYTES`], or that others
/// may read (it holds a private key or tokens).
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, ClientError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_error(path, &format!("cannot be read: {e}; it is not replaced"))),
    };
    let meta = file.metadata().map_err(|e| state_error(path, &format!("cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(state_error(path, "is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(state_error(path, &format!("others may read it (mode {mode:o}); chmod 600 it")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| state_error(path, &format!("{e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(state_error(path, &format!("is larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(Some(bytes))
}

fn parse_key(path: &Path, bytes: &[u8]) -> Result<DeviceKey, ClientError> {
    let corrupt = |why: &str| state_error(path, &format!("is not a usable device key ({why}); it is not replaced"));
    let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| corrupt(&e.to_string()))?;
    if file.version != VERSION {
        return Err(corrupt(&format!("version {}", file.version)));
    }
    let mut seed = decode_lenient::<32>(&file.private_key).ok_or_else(|| corrupt("privateKey"))?;
    let key = DeviceKey::from_seed(&seed);
    seed.fill(0);
    if key.device_id() != file.device_id || key.public_key_b64url() != file.public_key {
        return Err(corrupt("deviceId or publicKey do not match privateKey"));
    }
    Ok(key)
}

/// Makes a key and writes it where none exists; if another process made
/// one meanwhile, that one is read and used.
fn create_key(path: &Path) -> Result<DeviceKey, ClientError> {
    let key = DeviceKey::generate().map_err(|e| state_error(path, &format!("no randomness for a new key: {e}")))?;
    let mut seed = key.seed();
    let file = KeyFile {
        version: VERSION,
        device_id: key.device_id(),
        public_key: key.public_key_b64url(),
        private_key: b64url(&seed),
        created_at_ms: unix_ms(),
    };
    seed.fill(0);
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| state_error(path, &e.to_string()))?;
    let created = create_new(path, &bytes);
    bytes.fill(0);
    match created {
        Ok(true) => Ok(key),
        Ok(false) => match read_bounded(path)? {
            Some(bytes) => parse_key(path, &bytes),
            None => Err(state_error(path, "vanished while it was being created")),
        },
        Err(e) => Err(state_error(path, &format!("cannot be written: {e}"))),
    }
}

/// A temp file beside `path`, unique to this process.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(name)
}

/// Creates `path` with `bytes` only if it does not exist (a hard link of
/// a complete temp file: atomic, and it never replaces); false if it did.
fn create_new(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let temp = temp_path(path);
    let linked = write_temp(&temp, bytes).and_then(|()| fs::hard_link(&temp, path));
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => sync_dir(path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` atomically and durably.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    durable::replace(path, &temp_path(path), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("goclaw-client-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_key_is_made_once_0600_and_kept() {
        let dir = scratch("key");
        let first = DeviceState::open(&dir.join("node")).unwrap();
        let path = dir.join("node").join(KEY_FILE);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.join("node")).unwrap().permissions().mode() & 0o777, 0o700);
        let again = DeviceState::open(&dir.join("node")).unwrap();
        assert_eq!(first.device_id(), again.device_id());
        assert_eq!(first.device_id().len(), 64);
        // No temp file is left behind, and Debug shows no secret.
        assert_eq!(fs::read_dir(dir.join("node")).unwrap().count(), 1);
        let debug = format!("{first:?}");
        let text = fs::read_to_string(&path).unwrap();
        let file: KeyFile = serde_json::from_str(&text).unwrap();
        assert!(!debug.contains(&file.private_key), "{debug}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_file_that_cannot_be_used_is_refused_and_kept() {
        let dir = scratch("corrupt");
        let path = dir.join(KEY_FILE);
        let good = DeviceState::open(&dir).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let cases = [
            ("{not json".to_string(), "is not a usable device key"),
            (text.replace(good.device_id(), &"0".repeat(64)), "do not match"),
            (text.replace("\"version\": 1", "\"version\": 9"), "version 9"),
        ];
        for (content, why) in cases {
            fs::write(&path, &content).unwrap();
            let e = DeviceState::open(&dir).unwrap_err().to_string();
            assert!(e.starts_with(&path.display().to_string()) && e.contains(why), "{e}");
            assert_eq!(fs::read_to_string(&path).unwrap(), content, "never replaced");
        }
        fs::write(&path, &text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = DeviceState::open(&dir).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads anything; elsewhere a file we cannot open is refused.
        if File::open(&path).is_err() {
            assert!(DeviceState::open(&dir).unwrap_err().to_string().contains("cannot be read"));
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_are_kept_per_gateway_and_role_and_bounded() {
        let dir = scratch("tokens");
        let mut state = DeviceState::open(&dir).unwrap();
        state.store_token("ws://a:1/ws", "node", "t1").unwrap();
        state.store_token("ws://a:1/ws", "operator", "secret-t2").unwrap();
        let state2 = DeviceState::open(&dir).unwrap();
        assert_eq!(state2.token("ws://a:1/ws", "node").unwrap().secret(), "t1");
        assert_eq!(state2.token("ws://a:1/ws", "operator").unwrap().secret(), "secret-t2");
        assert!(state2.token("ws://b:1/ws", "node").is_none());
        assert_eq!(fs::metadata(dir.join(TOKENS_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        let mut state = state2;
        assert!(state.clear_token("ws://a:1/ws", "node").unwrap());
        assert!(!state.clear_token("ws://a:1/ws", "node").unwrap());
        assert!(DeviceState::open(&dir).unwrap().token("ws://a:1/ws", "node").is_none());
        for i in 0..MAX_STORED_TOKENS + 5 {
            state.store_token(&format!("ws://h{i}:1/ws"), "node", "t").unwrap();
        }
        assert_eq!(DeviceState::open(&dir).unwrap().tokens.len(), MAX_STORED_TOKENS);
        assert!(!format!("{state:?}").contains("secret-t2"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
