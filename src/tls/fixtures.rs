//! Test identities for the tunnel's unit tests (`tls::tunnel`, `tls::unbuffered`,
//! `upstream::dial`, `mesh::tunnel`): a development CA and leaves issued by `switchyard certs`'
//! own code, so every test makes its certificates the way users do.

use std::path::{Path, PathBuf};

use crate::config::IdentityConfig;
use crate::tls::certs_cli::{self, IssueOptions};

/// A CA in `dir/name/` (made once per folder).
pub(crate) fn ca(dir: &Path, name: &str) -> PathBuf {
    let ca_dir = dir.join(name);
    certs_cli::init(&ca_dir, 30).expect("CA");
    ca_dir
}

/// A leaf of the CA in `ca_dir` with URI SAN `spiffe` (or none), and the `[identity]` that
/// presents it and trusts `trust` (a CA folder).
pub(crate) fn identity(
    ca_dir: &Path,
    name: &str,
    spiffe: Option<&str>,
    trust: &Path,
) -> IdentityConfig {
    certs_cli::issue(&IssueOptions {
        ca_dir: ca_dir.to_owned(),
        name: name.to_owned(),
        spiffe: spiffe.map(str::to_owned),
        dns: Vec::new(),
        ips: Vec::new(),
        out: None,
        days: 30,
    })
    .expect("leaf");
    IdentityConfig {
        cert: ca_dir.join(format!("{name}.pem")),
        key: ca_dir.join(format!("{name}.key")),
        ca: trust.join(certs_cli::CA_CERT),
    }
}

/// `spiffe://local/me` under a fresh CA in `dir/ca/`: one identity that trusts its own CA.
pub(crate) fn me(dir: &Path) -> IdentityConfig {
    let ca_dir = ca(dir, "ca");
    identity(&ca_dir, "me", Some("spiffe://local/me"), &ca_dir)
}
