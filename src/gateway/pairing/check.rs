//! The bounds every string and list in the store keeps, checked on the way
//! in (each change) and on the way back (the file at open) by the same
//! functions, so the store never writes a file it would refuse to read.
//! Pure functions; never a panic.

use crate::wire::frame::MAX_ID_BYTES;

use super::crypto::{is_hex64, key_matches_id};
use super::state::DeviceInfo;
use super::{MAX_LABEL_BYTES, MAX_NAME_BYTES, MAX_NAMES, MAX_SCOPE_BYTES, MAX_SCOPES, StoreError};

/// Checks what the store keeps about a device: the id is 64 lowercase hex,
/// the key its canonical base64url and bound to it, the labels bounded.
pub(super) fn device(device: &DeviceInfo) -> Result<(), StoreError> {
    if !is_hex64(&device.device_id) {
        return Err(invalid("deviceId", "must be 64 lowercase hex characters"));
    }
    if !key_matches_id(&device.public_key, &device.device_id) {
        return Err(invalid("publicKey", "must be the base64url (unpadded) 32-byte key whose SHA-256 is deviceId"));
    }
    for (field, value, max) in [
        ("displayName", &device.display_name, MAX_LABEL_BYTES),
        ("platform", &device.platform, MAX_LABEL_BYTES),
        ("version", &device.version, MAX_LABEL_BYTES),
        ("clientId", &device.client_id, MAX_ID_BYTES),
        ("clientMode", &device.client_mode, MAX_LABEL_BYTES),
        ("deviceFamily", &device.device_family, MAX_LABEL_BYTES),
    ] {
        text(field, value, max, true)?;
    }
    Ok(())
}

/// Checks operator scopes and returns them sorted and deduplicated: at most
/// [`MAX_SCOPES`] non-empty strings of at most [`MAX_SCOPE_BYTES`].
pub(super) fn scopes(mut scopes: Vec<String>) -> Result<Vec<String>, StoreError> {
    list("scopes", &scopes, MAX_SCOPES, MAX_SCOPE_BYTES)?;
    scopes.sort_unstable();
    scopes.dedup();
    Ok(scopes)
}

/// Checks a node's declared `caps` or `commands`: at most [`MAX_NAMES`]
/// names of at most [`MAX_NAME_BYTES`].
pub(super) fn names(field: &'static str, names: &[String]) -> Result<(), StoreError> {
    list(field, names, MAX_NAMES, MAX_NAME_BYTES)
}

/// Whether `id` is a request id as the store makes them: a UUID in its
/// 36-character lowercase hyphenated form.
pub(super) fn request_id(id: &str) -> Result<(), StoreError> {
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) if uuid.hyphenated().to_string() == id => Ok(()),
        _ => Err(invalid("requestId", "must be a lowercase hyphenated UUID")),
    }
}

fn list(field: &'static str, items: &[String], max_items: usize, max_bytes: usize) -> Result<(), StoreError> {
    if items.len() > max_items {
        return Err(invalid(field, format!("has more than {max_items} entries")));
    }
    for item in items {
        text(field, item, max_bytes, false)?;
    }
    Ok(())
}

fn text(field: &'static str, value: &str, max_bytes: usize, may_be_empty: bool) -> Result<(), StoreError> {
    if value.is_empty() && !may_be_empty {
        return Err(invalid(field, "has an empty entry"));
    }
    if value.len() > max_bytes {
        return Err(invalid(field, format!("is longer than {max_bytes} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains a control character"));
    }
    Ok(())
}

fn invalid(field: &'static str, problem: impl Into<String>) -> StoreError {
    StoreError::Invalid { field, problem: problem.into() }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample_device;
    use super::*;
    use crate::wire::device::encode_public_key;

    fn field_of(result: Result<(), StoreError>) -> Option<&'static str> {
        match result {
            Ok(()) => None,
            Err(StoreError::Invalid { field, .. }) => Some(field),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn device_fields_are_bounded() {
        type Edit = fn(&mut DeviceInfo);
        let cases: &[(&str, Edit, Option<&str>)] = &[
            ("as made", |_| {}, None),
            ("empty labels", |d| d.display_name.clear(), None),
            ("uppercase id", |d| d.device_id = d.device_id.to_uppercase(), Some("deviceId")),
            ("short id", |d| d.device_id.truncate(63), Some("deviceId")),
            ("other key", |d| d.public_key = encode_public_key(&[9; 32]), Some("publicKey")),
            ("padded key", |d| d.public_key.push('='), Some("publicKey")),
            ("long name", |d| d.display_name = "n".repeat(MAX_LABEL_BYTES + 1), Some("displayName")),
            ("longest name", |d| d.display_name = "n".repeat(MAX_LABEL_BYTES), None),
            ("newline", |d| d.platform = "linux\nx".into(), Some("platform")),
            ("long client id", |d| d.client_id = "c".repeat(MAX_ID_BYTES + 1), Some("clientId")),
            ("long mode", |d| d.client_mode = "m".repeat(MAX_LABEL_BYTES + 1), Some("clientMode")),
            ("long family", |d| d.device_family = "f".repeat(MAX_LABEL_BYTES + 1), Some("deviceFamily")),
            ("long version", |d| d.version = "v".repeat(MAX_LABEL_BYTES + 1), Some("version")),
        ];
        for (name, edit, want) in cases {
            let mut d = sample_device(1);
            edit(&mut d);
            assert_eq!(field_of(device(&d)), *want, "{name}");
        }
    }

    #[test]
    fn lists_are_bounded_and_scopes_normalized() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(scopes(s(&["b", "a", "b"])).unwrap(), s(&["a", "b"]));
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        assert!(scopes(many[..MAX_SCOPES].to_vec()).is_ok());
        for bad in [many, s(&[""]), vec!["x".repeat(MAX_SCOPE_BYTES + 1)], s(&["a\u{7}"])] {
            assert!(scopes(bad.clone()).is_err(), "{bad:?}");
        }
        let commands: Vec<String> = (0..=MAX_NAMES).map(|i| format!("c{i}")).collect();
        assert!(names("commands", &commands[..MAX_NAMES]).is_ok());
        assert_eq!(field_of(names("commands", &commands)), Some("commands"));
        assert_eq!(field_of(names("caps", &["x".repeat(MAX_NAME_BYTES + 1)])), Some("caps"));
    }

    #[test]
    fn request_ids_are_canonical_uuids() {
        let id = uuid::Uuid::new_v4().to_string();
        assert!(request_id(&id).is_ok());
        for bad in [id.to_uppercase(), id.replace('-', ""), format!("{{{id}}}"), String::new(), "x".into()] {
            assert!(request_id(&bad).is_err(), "{bad:?}");
        }
    }
}
