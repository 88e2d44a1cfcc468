//! What a client-controlled string may be before the gateway stores, shows
//! or logs it: ids and labels are bounded and hold no control, format,
//! line or paragraph separator characters (Unicode Cc, Cf, Zl, Zp: the
//! ones that reorder, hide or break a line on a console). Pure functions.

use crate::wire::frame::Failure;

/// Format characters (Unicode 15.1 general category Cf), as ranges: bidi
/// controls, zero-width characters, the BOM, soft hyphen, tags and the
/// rest of the category.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Whether `c` may not appear in an id or a label: Cc, Cf, Zl or Zp.
pub fn is_forbidden(c: char) -> bool {
    let code = u32::from(c);
    c.is_control() || c == '\u{2028}' || c == '\u{2029}' || FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
}

/// An identifier: 1 to `max` bytes, no forbidden character.
///
/// # Errors
/// `INVALID_REQUEST` naming the field (never quoting the value).
pub fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), Failure> {
    if value.is_empty() || value.len() > max || value.chars().any(is_forbidden) {
        return Err(Failure::invalid(format!(
            "{field} must be 1 to {max} bytes without control or invisible characters"
        )));
    }
    Ok(())
}

/// Free text: at most `max` bytes, no forbidden character.
///
/// # Errors
/// `INVALID_REQUEST` naming the field (never quoting the value).
pub fn check_label(field: &'static str, value: &str, max: usize) -> Result<(), Failure> {
    if value.len() > max || value.chars().any(is_forbidden) {
        return Err(Failure::invalid(format!(
            "{field} must be at most {max} bytes without control or invisible characters"
        )));
    }
    Ok(())
}

/// A method name that may be quoted back in `unknown method: <m>` (real
/// node hosts key on that text): short, ASCII letters, digits, `.`, `_`
/// and `-` only. Anything else is not quoted.
pub fn quotable_method(method: &str) -> Option<&str> {
    let ok = !method.is_empty()
        && method.len() <= 64
        && method.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(method)
}

/// `text` cut to at most `max` bytes on a character boundary, every
/// forbidden character replaced by its `\u{...}` escape: safe to put in a
/// log line whatever a client sent.
pub fn for_log(text: &str, max: usize) -> String {
    // Every field of every log line comes through here: the common case,
    // short and clean, is one copy.
    if text.len() <= max && !text.chars().any(is_forbidden) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if !is_forbidden(c) {
            if out.len() + c.len_utf8() > max {
                out.push('…');
                break;
            }
            out.push(c);
            continue;
        }
        let escaped = format!("\\u{{{:x}}}", u32::from(c));
        if out.len() + escaped.len() > max {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_characters() {
        for c in
            ['\0', '\n', '\u{7f}', '\u{85}', '\u{200b}', '\u{202e}', '\u{2066}', '\u{feff}', '\u{2028}', '\u{2029}']
        {
            assert!(is_forbidden(c), "{:x}", u32::from(c));
            assert!(check_name("x", &format!("a{c}b"), 16).is_err());
        }
        for c in ['a', 'é', '中', '🙂', ' ', '\u{2000}'] {
            assert!(!is_forbidden(c), "{:x}", u32::from(c));
        }
        assert!(check_name("x", "", 4).is_err() && check_name("x", "abcde", 4).is_err());
        assert!(check_label("x", "", 4).is_ok() && check_label("x", "Kitchen Pi", 16).is_ok());
    }

    #[test]
    fn quoting_and_logging() {
        assert_eq!(quotable_method("node.skills.update"), Some("node.skills.update"));
        assert_eq!(quotable_method("a b"), None);
        assert_eq!(quotable_method(&"m".repeat(65)), None);
        assert_eq!(for_log("a\u{202e}b\n", 64), "a\\u{202e}b\\u{a}");
        let long = for_log(&"é".repeat(300), 256);
        assert!(long.len() <= 256 + '…'.len_utf8() && long.ends_with('…'));
    }
}
