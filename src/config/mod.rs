//! Configuration: TOML file -> raw serde model -> validated [`Config`].
//!
//! Two stages, as sozu does it: [`raw`] mirrors the file exactly (`deny_unknown_fields`, spans
//! kept so every error can point at `FILE:LINE:COL`), and [`validate`] turns it into the typed
//! model in [`model`], checking every reference. Subsystems take only their own section.
//!
//! Syntax and type errors stop at the first one (the TOML parser cannot go on meaningfully);
//! semantic errors are all collected and reported together, sorted by position.

mod defaults;
pub mod diff;
mod error;
pub mod mesh_rules;
mod model;
mod otlp;
mod raw;
mod summary;
mod units;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use otlp::otlp_traces_uri;
pub use units::{parse_duration, parse_size};
pub(crate) use validate::admin_token;

use error::Locator;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole_file(path, format!("cannot read config: {e}")))?;
    parse(&text, path)
}

/// Validates config text. `path` names the file in messages, and relative paths inside the
/// config (TLS files, discovery file, mesh secret) resolve against its parent folder.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let loc = Locator::new(text, path);
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigErrors {
            errors: vec![loc.error(&span, e.message().trim_end())],
        }
    })?;
    let mut config = validate::validate(raw, &loc).map_err(|errors| ConfigErrors { errors })?;
    config.sha256 = sha256_hex(text.as_bytes());
    Ok(config)
}

/// SHA-256 of `bytes` as lower-case hex: `Config::sha256`, and what a reload compares to tell
/// whether the file changed at all.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}
