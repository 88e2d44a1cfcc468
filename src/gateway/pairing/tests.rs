//! Tests of the store through its public operations: each change, each
//! bound, expiry, durability across a reopen, refusal of bad files, and the
//! helpers the other test modules share.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::wire::device::{device_id, encode_public_key};

pub(super) fn sample_device(seed: u8) -> DeviceInfo {
    let raw = [seed; 32];
    DeviceInfo {
        device_id: device_id(&raw),
        public_key: encode_public_key(&raw),
        display_name: format!("device {seed}"),
        platform: "linux".into(),
        version: "1.0".into(),
        client_id: "node-host".into(),
        client_mode: "node".into(),
        device_family: String::new(),
    }
}

/// The store's file in a fresh directory of its own, removed on drop.
pub(super) struct Scratch {
    root: PathBuf,
    path: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl From<&Scratch> for PathBuf {
    fn from(scratch: &Scratch) -> PathBuf {
        scratch.path.clone()
    }
}

pub(super) fn scratch(name: &str) -> Scratch {
    let root = std::env::temp_dir().join(format!("goclaw-pairing-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let path = root.join("state").join("pairing.json");
    Scratch { root, path }
}

fn ask(seed: u8, role: Role, ip: &str) -> NewRequest {
    NewRequest {
        device: sample_device(seed),
        role,
        scopes: if role == Role::Operator { vec!["operator.read".into()] } else { Vec::new() },
        caps: vec!["system".into()],
        commands: vec!["system.run".into(), "system.which".into()],
        source_ip: ip.parse().unwrap(),
    }
}

const T0: u64 = 1_700_000_000_000;

#[test]
fn a_missing_file_is_an_empty_store_in_a_new_0700_directory() {
    let path = scratch("missing");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.snapshot().counts(T0), Counts { pending: 0, paired: 0 });
    assert!(!path.exists(), "opening writes nothing");
    let dir = path.parent().unwrap();
    assert_eq!(fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700);
    store.approve_local(sample_device(1), Role::Node, vec![], T0).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn request_then_approve_then_reopen() {
    let path = scratch("approve");
    let store = Store::open(&path).unwrap();
    let first = store.request(ask(1, Role::Node, "203.0.113.7"), T0).unwrap();
    assert!(first.created);
    let snap = store.snapshot();
    assert_eq!(snap.pending_for(&sample_device(1).device_id, Role::Node, T0), Some(&first.request));
    assert_eq!(snap.pending_request(&first.request.request_id, T0), Some(&first.request));
    assert!(snap.approved(&sample_device(1).device_id, Role::Node).is_none());

    // Asking again returns the same request and writes nothing.
    fs::remove_file(&path).unwrap();
    let again = store.request(ask(1, Role::Node, "198.51.100.1"), T0 + 5).unwrap();
    assert!(!again.created);
    assert_eq!(again.request.request_id, first.request.request_id);
    assert!(!path.exists());

    let approved = store.approve(&first.request.request_id, T0 + 10).unwrap();
    assert_eq!(approved.request, first.request);
    assert_eq!(approved.device.roles, vec![Role::Node]);
    assert_eq!((approved.device.created_at_ms, approved.device.approved_at_ms), (T0 + 10, T0 + 10));
    let snap = store.snapshot();
    assert_eq!(snap.approved(&sample_device(1).device_id, Role::Node), Some(&approved.device));
    assert!(snap.approved(&sample_device(1).device_id, Role::Operator).is_none());
    assert_eq!(snap.counts(T0 + 10), Counts { pending: 0, paired: 1 });
    assert!(matches!(store.approve(&first.request.request_id, T0 + 11), Err(StoreError::UnknownRequest)));

    // A node's device asking for operator: a new request; approval merges.
    let upgrade = store.request(ask(1, Role::Operator, "203.0.113.7"), T0 + 20).unwrap();
    assert!(upgrade.created);
    let merged = store.approve(&upgrade.request.request_id, T0 + 30).unwrap().device;
    assert_eq!(merged.roles, vec![Role::Node, Role::Operator]);
    assert_eq!(merged.scopes, vec!["operator.read".to_string()]);
    assert_eq!((merged.created_at_ms, merged.approved_at_ms), (T0 + 10, T0 + 30));

    let before = store.snapshot();
    let reopened = Store::open(&path).unwrap();
    assert_eq!(*reopened.snapshot().0, *before.0);
}

#[test]
fn reject_and_removals() {
    let dir = scratch("remove");
    let store = Store::open(&dir).unwrap();
    let id = |seed| sample_device(seed).device_id;
    let r = store.request(ask(1, Role::Node, "10.0.0.1"), T0).unwrap().request;
    assert_eq!(store.reject(&r.request_id, T0 + 1).unwrap(), r);
    assert!(matches!(store.reject(&r.request_id, T0 + 2), Err(StoreError::UnknownRequest)));
    assert!(matches!(store.approve("not-a-request", T0), Err(StoreError::UnknownRequest)));
    assert_eq!(store.snapshot().counts(T0), Counts { pending: 0, paired: 0 });

    store.approve_local(sample_device(2), Role::Node, vec![], T0).unwrap();
    store.approve_local(sample_device(2), Role::Operator, vec!["operator.admin".into()], T0).unwrap();
    store.issue_token(&id(2), Role::Node, T0).unwrap();
    let op_token = store.issue_token(&id(2), Role::Operator, T0).unwrap();
    let left = store.remove_role(&id(2), Role::Node, T0).unwrap().unwrap();
    assert_eq!(left.roles, vec![Role::Operator]);
    assert_eq!(left.tokens.iter().map(|t| t.role).collect::<Vec<_>>(), vec![Role::Operator]);
    assert!(store.snapshot().token_matches(&id(2), Role::Operator, op_token.secret()));
    assert!(matches!(store.remove_role(&id(2), Role::Node, T0), Err(StoreError::UnknownDevice)));
    assert_eq!(store.remove_role(&id(2), Role::Operator, T0).unwrap(), None);
    assert!(store.snapshot().device(&id(2)).is_none());
    assert!(!store.snapshot().token_matches(&id(2), Role::Operator, op_token.secret()));

    // Removing a device takes its pending requests with it.
    store.approve_local(sample_device(3), Role::Node, vec![], T0).unwrap();
    store.request(ask(3, Role::Operator, "10.0.0.3"), T0).unwrap();
    let removed = store.remove_device(&id(3), T0).unwrap();
    assert_eq!(removed.device, sample_device(3));
    assert_eq!(store.snapshot().counts(T0), Counts { pending: 0, paired: 0 });
    assert!(matches!(store.remove_device(&id(3), T0), Err(StoreError::UnknownDevice)));
}

#[test]
fn approve_local_is_silent_idempotent_and_resolves_a_request() {
    let path = scratch("local");
    let store = Store::open(&path).unwrap();
    store.request(ask(1, Role::Node, "127.0.0.1"), T0).unwrap();
    let device = store.approve_local(sample_device(1), Role::Node, vec![], T0 + 1).unwrap();
    assert_eq!(device.roles, vec![Role::Node]);
    assert_eq!(store.snapshot().counts(T0 + 1), Counts { pending: 0, paired: 1 });
    fs::remove_file(&path).unwrap();
    assert_eq!(store.approve_local(sample_device(1), Role::Node, vec![], T0 + 2).unwrap(), device);
    assert!(!path.exists(), "nothing new to approve: nothing written");
    let mut renamed = sample_device(1);
    renamed.display_name = "renamed".into();
    assert_eq!(store.approve_local(renamed, Role::Node, vec![], T0 + 3).unwrap().device.display_name, "renamed");
    assert!(path.exists());
}

#[test]
fn device_tokens_are_stored_as_hashes_and_replaced() {
    let path = scratch("tokens");
    let store = Store::open(&path).unwrap();
    let id = sample_device(1).device_id;
    assert!(matches!(store.issue_token(&id, Role::Node, T0), Err(StoreError::UnknownDevice)));
    store.approve_local(sample_device(1), Role::Node, vec![], T0).unwrap();
    assert!(matches!(store.issue_token(&id, Role::Operator, T0), Err(StoreError::UnknownDevice)));
    let first = store.issue_token(&id, Role::Node, T0).unwrap();
    let snap = store.snapshot();
    assert!(snap.token_matches(&id, Role::Node, first.secret()));
    assert!(!snap.token_matches(&id, Role::Operator, first.secret()));
    assert!(!snap.token_matches(&sample_device(2).device_id, Role::Node, first.secret()));
    let second = store.issue_token(&id, Role::Node, T0 + 1).unwrap();
    let snap = store.snapshot();
    assert!(!snap.token_matches(&id, Role::Node, first.secret()));
    assert!(snap.token_matches(&id, Role::Node, second.secret()));
    assert_eq!(snap.approved(&id, Role::Node).unwrap().tokens.len(), 1);
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains(second.secret()) && text.contains(&crypto::TokenHash::of(second.secret()).to_hex()));
    assert!(Store::open(&path).unwrap().snapshot().token_matches(&id, Role::Node, second.secret()));
}

#[test]
fn pending_requests_are_bounded_per_source_and_in_all() {
    let dir = scratch("bounds");
    let store = Store::open(&dir).unwrap();
    let per_source = |r| matches!(r, Err(StoreError::TooManyPending { per_source: true, limit: 4 }));
    // (seed, source, accepted): an IPv6 /64 is one source; a mapped IPv4 is its IPv4.
    let cases: &[(u8, &str, bool)] = &[
        (1, "192.0.2.1", true),
        (2, "192.0.2.1", true),
        (3, "::ffff:192.0.2.1", true),
        (4, "192.0.2.1", true),
        (5, "::ffff:192.0.2.1", false),
        (6, "192.0.2.2", true),
        (7, "2001:db8::1", true),
        (8, "2001:db8::2", true),
        (9, "2001:db8:0:0:ffff::3", true),
        (10, "2001:db8::4", true),
        (11, "2001:db8::5", false),
        (12, "2001:db8:0:1::5", true),
    ];
    for &(seed, ip, accepted) in cases {
        let result = store.request(ask(seed, Role::Node, ip), T0);
        assert_eq!(result.is_ok(), accepted, "{seed} {ip}");
        assert!(accepted || per_source(result), "{seed} {ip}");
    }
    let mut seed = 13u8;
    while store.snapshot().counts(T0).pending < MAX_PENDING {
        let ip = IpAddr::from([198, 51, 100, seed]);
        store.request(ask(seed, Role::Node, &ip.to_string()), T0).unwrap();
        seed += 1;
    }
    let full = store.request(ask(seed, Role::Node, "203.0.113.200"), T0);
    assert!(matches!(full, Err(StoreError::TooManyPending { per_source: false, limit: MAX_PENDING })));
    // A device with a request waiting still gets it back.
    assert!(!store.request(ask(1, Role::Node, "203.0.113.201"), T0).unwrap().created);
}

#[test]
fn pending_requests_expire_lazily() {
    let path = scratch("expiry");
    let store = Store::open(&path).unwrap();
    let old = store.request(ask(1, Role::Node, "192.0.2.1"), T0).unwrap().request;
    let last_live = T0 + PENDING_TTL_MS - 1;
    assert_eq!(store.snapshot().counts(last_live).pending, 1);
    let expired = T0 + PENDING_TTL_MS;
    let snap = store.snapshot();
    assert_eq!((snap.counts(expired).pending, snap.pending(expired).count()), (0, 0));
    assert!(snap.pending_for(&old.device.device_id, Role::Node, expired).is_none());
    assert!(fs::read_to_string(&path).unwrap().contains(&old.request_id), "a read writes nothing");
    assert!(matches!(store.approve(&old.request_id, expired), Err(StoreError::UnknownRequest)));
    let new = store.request(ask(1, Role::Node, "192.0.2.1"), expired).unwrap();
    assert!(new.created && new.request.request_id != old.request_id);
    assert!(!fs::read_to_string(&path).unwrap().contains(&old.request_id), "a write drops it");
    // The per-source bound counts live requests only.
    for seed in 2..5 {
        store.request(ask(seed, Role::Node, "192.0.2.1"), T0).unwrap();
    }
    assert!(store.request(ask(5, Role::Node, "192.0.2.1"), expired).is_ok());
}

#[test]
fn a_failed_write_changes_nothing() {
    let path = scratch("failed");
    let store = Store::open(&path).unwrap();
    let r = store.request(ask(1, Role::Node, "192.0.2.1"), T0).unwrap().request;
    let before = store.snapshot();
    let on_disk = fs::read(&path).unwrap();
    // A directory where the temp file goes: every write fails, even as root.
    fs::create_dir(file::temp_path(&path)).unwrap();
    let err = store.approve(&r.request_id, T0 + 1).unwrap_err();
    assert!(matches!(err, StoreError::Write { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(*store.snapshot().0, *before.0);
    assert_eq!(fs::read(&path).unwrap(), on_disk);
    fs::remove_dir(file::temp_path(&path)).unwrap();
    store.approve(&r.request_id, T0 + 2).unwrap();
}

#[test]
fn readers_never_wait_for_the_writer() {
    let dir = scratch("readers");
    let store = Store::open(&dir).unwrap();
    let _writing = store.writer.lock();
    assert_eq!(store.snapshot().counts(T0).paired, 0);
}

#[test]
fn devices_are_bounded() {
    let mut state = State::default();
    for n in 0..MAX_PAIRED_DEVICES {
        let mut d = sample_device(0);
        d.device_id = format!("{n:064x}");
        state.paired.insert(
            d.device_id.clone(),
            PairedDevice {
                device: d,
                roles: vec![Role::Node],
                scopes: vec![],
                created_at_ms: T0,
                approved_at_ms: T0,
                tokens: vec![],
            },
        );
    }
    let dir = scratch("devices");
    let store = Store { path: Some(dir.to_path_buf()), view: Mutex::new(Arc::new(state)), writer: Mutex::new(()) };
    let err = store.approve_local(sample_device(1), Role::Node, vec![], T0).unwrap_err();
    assert!(matches!(err, StoreError::TooManyDevices { limit: MAX_PAIRED_DEVICES }), "{err}");
    assert!(!store.path().unwrap().exists());
}

#[test]
fn the_file_never_grows_past_its_bound() {
    let mut state = State::default();
    let mut d = sample_device(0);
    d.display_name = "\"".repeat(MAX_LABEL_BYTES);
    for n in 0..MAX_PAIRED_DEVICES - 1 {
        d.device_id = format!("{n:064x}");
        let scopes = (0..MAX_SCOPES).map(|i| format!("{i:0>64}")).collect();
        let record = PairedDevice {
            device: d.clone(),
            roles: vec![Role::Node],
            scopes,
            created_at_ms: T0,
            approved_at_ms: T0,
            tokens: vec![],
        };
        state.paired.insert(d.device_id.clone(), record);
    }
    let path = scratch("large");
    let store = Store { path: Some(path.clone()), view: Mutex::new(Arc::new(state)), writer: Mutex::new(()) };
    let err = store.approve_local(sample_device(1), Role::Node, vec![], T0).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { limit: MAX_FILE_BYTES, .. }), "{err}");
    assert!(!path.exists());
    assert_eq!(store.snapshot().counts(T0).paired, MAX_PAIRED_DEVICES - 1);
}

#[test]
fn a_bad_file_is_refused_in_one_line_naming_it_and_left_alone() {
    let path = scratch("bad");
    let store = Store::open(&path).unwrap();
    store.approve_local(sample_device(1), Role::Node, vec![], T0).unwrap();
    let good = fs::read(&path).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 10].to_vec()),
        ("garbage", vec![0xff, 0xfe, b'{', b'\n', b'x']),
        ("too large", vec![b' '; MAX_FILE_BYTES + 1]),
    ];
    for (name, bytes) in cases {
        fs::write(&path, &bytes).unwrap();
        let err = Store::open(&path).err().unwrap();
        let line = err.to_string();
        assert!(matches!(err, StoreError::Load { .. }), "{name}: {line}");
        assert!(line.starts_with(&format!("pairing store {}: ", path.display())), "{name}: {line}");
        assert!(!line.contains('\n'), "{name}: {line}");
        assert_eq!(fs::read(&path).unwrap(), bytes, "{name}: the file is left as it was");
    }
    // Unreadable: a directory where the file should be (permissions do not
    // stop root, which runs the CI).
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    let line = Store::open(&path).err().unwrap().to_string();
    assert!(line.contains(&path.display().to_string()) && line.contains("cannot read"), "{line}");
    fs::remove_dir(&path).unwrap();
    // A temp file left by a crash is removed; the file it did not replace is read.
    fs::write(&path, &good).unwrap();
    fs::write(file::temp_path(&path), &good[..5]).unwrap();
    assert_eq!(Store::open(&path).unwrap().snapshot().counts(T0).paired, 1);
    assert!(!file::temp_path(&path).exists());
}
