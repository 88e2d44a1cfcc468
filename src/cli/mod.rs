//! The command line: which command runs, with what. Owns the precedence
//! flag > `GOCLAW_*` variable > default and turns arguments into a
//! validated [`Command`] or a [`ConfigError`] naming the flag (or variable)
//! at fault; never exits itself and never starts anything.

mod args;
mod client;
mod command;
mod help;
mod serve;
mod values;

use crate::util::ConfigError;

pub use command::Command;

/// Parses `args` (without the program name). `env` looks up environment
/// variables; tests pass a map instead of the real environment.
///
/// # Errors
/// Unknown flags, missing or malformed values and invalid combinations, each
/// as one [`ConfigError`] naming the flag or variable.
pub fn parse<F>(args: &[String], env: F) -> Result<Command, ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let Some((command, rest)) = args.split_first() else {
        return Err(ConfigError::new("", "missing command; usage: goclaw serve [FLAGS] (see goclaw --help)"));
    };
    match command.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help(help::top())),
        "-V" | "--version" | "version" => Ok(Command::Version),
        "serve" => serve::parse(rest, &env),
        "healthcheck" => client::parse_healthcheck(rest, &env),
        "node" => client::parse_node(rest, &env),
        "nodes" | "invoke" | "watch" => client::parse_operator(command, rest, &env),
        other => Err(ConfigError::new("", format!("unknown command {other:?} (see goclaw --help)"))),
    }
}
