//! Splitting arguments into flags and positionals, finding each value's
//! source (the flag, else its `GOCLAW_*` variable) and the token's sources.
//! Every error names the flag or variable at fault.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::util::ConfigError;
use crate::wire::auth::{MAX_TOKEN_BYTES, Token};

/// A flag of any command: its name, and whether it takes a value.
pub type FlagSpec = (&'static str, bool);

/// The flags every client command takes.
pub const CONNECTION_FLAGS: &[FlagSpec] = &[
    ("--url", true),
    ("--token", true),
    ("--token-file", true),
    ("--state-dir", true),
    ("--ca-file", true),
    ("--pin-sha256", true),
];

/// The flags given (all their values) and the positional arguments.
pub struct Args {
    /// Every value of each flag given.
    pub given: HashMap<&'static str, Vec<String>>,
    /// The arguments that are not flags.
    pub positional: Vec<String>,
}

impl Args {
    /// Refuses positional arguments, for commands that take none.
    pub fn no_positional(&self, command: &str) -> Result<(), ConfigError> {
        match self.positional.first() {
            Some(extra) => {
                Err(ConfigError::new("", format!("unexpected argument {extra:?} (see goclaw {command} --help)")))
            }
            None => Ok(()),
        }
    }
}

/// Splits `args` into `flags` (as `--flag value` or `--flag=value`) and
/// positional arguments; only the `repeatable` flags may be given more than once.
/// `Ok(None)`: `--help` was asked for.
pub fn split_args(
    command: &str,
    args: &[String],
    flags: &[FlagSpec],
    repeatable: &[&str],
) -> Result<Option<Args>, ConfigError> {
    let mut parsed = Args { given: HashMap::new(), positional: Vec::new() };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if !arg.starts_with("--") || arg == "--" {
            parsed.positional.push(arg.clone());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let Some(&(flag, takes_value)) = flags.iter().find(|(f, _)| *f == name) else {
            return Err(ConfigError::new("", format!("unknown flag {arg:?} (see goclaw {command} --help)")));
        };
        let value = match (takes_value, inline) {
            (true, Some(value)) => value,
            (true, None) => args.next().cloned().ok_or_else(|| ConfigError::new(flag, "missing value"))?,
            (false, None) => String::new(),
            (false, Some(_)) => return Err(ConfigError::new(flag, "takes no value")),
        };
        let values = parsed.given.entry(flag).or_default();
        if !values.is_empty() && !repeatable.contains(&flag) {
            return Err(ConfigError::new(flag, "given more than once"));
        }
        values.push(value);
    }
    Ok(Some(parsed))
}

/// Where a value came from, for error messages: the flag or the variable.
pub struct Lookup<'a, F> {
    /// The flags given.
    pub given: &'a HashMap<&'static str, Vec<String>>,
    /// Looks up an environment variable.
    pub env: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Lookup<'_, F> {
    /// The value of `flag` and the name to blame for it: the flag itself if
    /// given, else its `GOCLAW_*` variable if set and non-empty.
    pub fn get(&self, flag: &'static str) -> Option<(String, String)> {
        if let Some(value) = self.given.get(flag).and_then(|v| v.last()) {
            return Some((flag.to_string(), value.clone()));
        }
        let var = env_name(flag);
        (self.env)(&var).filter(|v| !v.is_empty()).map(|value| (var, value))
    }

    /// Every value of a repeatable flag, or the comma-separated list in its
    /// variable; each with the name to blame for it.
    pub fn list(&self, flag: &'static str) -> Vec<(String, String)> {
        if let Some(values) = self.given.get(flag) {
            return values.iter().map(|value| (flag.to_string(), value.clone())).collect();
        }
        let Some((source, value)) = self.get(flag) else { return Vec::new() };
        value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(|v| (source.clone(), v.to_string())).collect()
    }

    pub fn parsed<T>(
        &self,
        flag: &'static str,
        default: T,
        parse: impl Fn(&str, &str) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        match self.get(flag) {
            Some((source, value)) => parse(&source, &value),
            None => Ok(default),
        }
    }
}

/// `--rate-burst` → `GOCLAW_RATE_BURST`.
fn env_name(flag: &str) -> String {
    format!("GOCLAW_{}", flag.trim_start_matches('-').replace('-', "_").to_ascii_uppercase())
}

/// Token sources, first match wins: `--token`, `--token-file`,
/// `GOCLAW_TOKEN`, `GOCLAW_TOKEN_FILE`, `$CREDENTIALS_DIRECTORY/token`.
/// Two sources at the same level are ambiguous and refused.
pub fn resolve_token<F: Fn(&str) -> Option<String>>(lookup: &Lookup<'_, F>) -> Result<Option<Token>, ConfigError> {
    let flag = |name| lookup.given.get(name).and_then(|v| v.last()).cloned();
    let var = |name| (lookup.env)(name).filter(|v: &String| !v.is_empty());
    let levels = [
        (flag("--token"), flag("--token-file"), "--token", "--token-file"),
        (var("GOCLAW_TOKEN"), var("GOCLAW_TOKEN_FILE"), "GOCLAW_TOKEN", "GOCLAW_TOKEN_FILE"),
    ];
    for (token, file, token_name, file_name) in levels {
        match (token, file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(token_name, format!("use either {token_name} or {file_name}, not both")));
            }
            (Some(token), None) => return Token::new(token_name, token).map(Some),
            (None, Some(path)) => return read_token_file(file_name, Path::new(&path)).map(Some),
            (None, None) => {}
        }
    }
    if let Some(dir) = var("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join("token");
        if path.exists() {
            return read_token_file("$CREDENTIALS_DIRECTORY/token", &path).map(Some);
        }
    }
    Ok(None)
}

/// Reads a token file, bounded in size, trailing newline trimmed.
fn read_token_file(source: &'static str, path: &Path) -> Result<Token, ConfigError> {
    let cannot = |why: String| ConfigError::new(source, format!("cannot read {}: {why}", path.display()));
    let file = File::open(path).map_err(|e| cannot(e.to_string()))?;
    let mut text = String::new();
    // Read one byte past the bound (plus a CRLF) so an oversized file is noticed.
    file.take(MAX_TOKEN_BYTES as u64 + 3).read_to_string(&mut text).map_err(|e| cannot(e.to_string()))?;
    let token = text.trim_end_matches(['\r', '\n']).to_string();
    Token::new(source, token)
}
