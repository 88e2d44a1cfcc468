//! The error of every bad flag or value, whoever checks it (the command
//! line, the gateway's configuration, the token): the flag at fault and why.

use std::fmt;

/// A bad flag or value. Fatal at start-up: the process prints it on one line
/// and exits with status 2. The operator is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag (or variable) at fault, e.g. `--pong-wait`.
    pub flag: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// Builds an error about `flag`.
    pub fn new(flag: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { flag: flag.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.flag.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.flag, self.message) }
    }
}

impl std::error::Error for ConfigError {}
