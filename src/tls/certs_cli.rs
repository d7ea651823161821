//! `switchyard certs init|issue`: identities for sidecars without a control plane.
//!
//! `init` makes a development CA (`ca.pem`, `ca.key`) in a folder; `issue` signs a leaf with
//! it (`NAME.pem`, `NAME.key`) carrying a SPIFFE-style URI SAN and DNS SANs, valid for both
//! server and client authentication, so the same pair serves a sidecar's listener and its
//! upstream mTLS. Two sidecars holding leaves of one CA, each trusting `ca.pem`, talk mTLS with
//! no other setup. Keys are ECDSA P-256 (rcgen's default), written with mode 0600.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// File names inside the CA folder.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";

/// Backdating of `not_before`, so a peer whose clock is a little behind accepts a fresh leaf.
const BACKDATE: Duration = Duration::from_secs(3600);
const DAY: u64 = 86_400;

/// What `certs issue` makes.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// Folder holding `ca.pem` and `ca.key`.
    pub ca_dir: PathBuf,
    /// File stem and CN of the leaf, and its DNS SAN when `dns` is empty.
    pub name: String,
    /// URI SAN, e.g. `spiffe://local/orders`: the identity routes match.
    pub spiffe: Option<String>,
    /// DNS SANs (default: `name`).
    pub dns: Vec<String>,
    /// IP SANs, for clients that connect by address without SNI.
    pub ips: Vec<IpAddr>,
    /// Where to write `NAME.pem` and `NAME.key` (default: the CA folder).
    pub out: Option<PathBuf>,
    /// Validity in days.
    pub days: u64,
}

/// Makes `dir/ca.pem` and `dir/ca.key`, valid for `days`. Refuses to replace an existing CA
/// key: every leaf issued by it would silently stop verifying.
pub fn init(dir: &Path, days: u64) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_path = dir.join(CA_KEY);
    if key_path.exists() {
        bail!("{} exists; not replacing a CA key", key_path.display());
    }
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "switchyard development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let cert = params.self_signed(&key).context("signing the CA")?;
    let cert_path = dir.join(CA_CERT);
    write(&cert_path, &cert.pem(), false)?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok(vec![cert_path, key_path])
}

/// Issues a leaf signed by the CA in `options.ca_dir`; returns the certificate and key paths.
pub fn issue(options: &IssueOptions) -> anyhow::Result<Vec<PathBuf>> {
    if options.name.is_empty()
        || options
            .name
            .contains(|c: char| c == '/' || c == '\\' || c == '.' && options.name.starts_with('.'))
    {
        bail!("--name {:?}: a file name is needed", options.name);
    }
    let ca_cert_path = options.ca_dir.join(CA_CERT);
    let ca_pem = std::fs::read_to_string(&ca_cert_path)
        .with_context(|| format!("reading {}", ca_cert_path.display()))?;
    let ca_key_path = options.ca_dir.join(CA_KEY);
    let ca_key_pem = std::fs::read_to_string(&ca_key_path)
        .with_context(|| format!("reading {}", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("{}: not a private key", ca_key_path.display()))?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem)
        .with_context(|| format!("{}: not a CA certificate", ca_cert_path.display()))?;
    // Re-signing the CA's own parameters with its key yields an issuer with the same name and
    // key identifier as `ca.pem`, which is all a leaf's signature and chain refer to.
    let issuer = ca_params
        .self_signed(&ca_key)
        .context("loading the CA for signing")?;

    let dns = if options.dns.is_empty() {
        vec![options.name.clone()]
    } else {
        options.dns.clone()
    };
    let mut params = CertificateParams::new(dns).context("--dns: not a DNS name")?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, options.name.as_str());
    if let Some(uri) = &options.spiffe {
        let uri = uri
            .clone()
            .try_into()
            .with_context(|| format!("--spiffe {uri:?}: not ASCII"))?;
        params.subject_alt_names.insert(0, SanType::URI(uri));
    }
    params
        .subject_alt_names
        .extend(options.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, options.days);
    let key = KeyPair::generate().context("generating the leaf key")?;
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .context("signing the leaf")?;
    let out = options.out.as_deref().unwrap_or(&options.ca_dir);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cert_path = out.join(format!("{}.pem", options.name));
    let key_path = out.join(format!("{}.key", options.name));
    write(&cert_path, &cert.pem(), false)?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok(vec![cert_path, key_path])
}

fn validity(params: &mut CertificateParams, days: u64) {
    let now = SystemTime::now();
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = (now + Duration::from_secs(days.max(1).saturating_mul(DAY))).into();
}

/// Writes `text` to `path`; private keys are created with mode 0600 (owner only).
fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
