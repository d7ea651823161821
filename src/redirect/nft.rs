//! Runs an nftables script as one transaction: `nft -f -` with the script on standard input.
//! Why a subprocess rather than netlink is in the [module doc](super).

use std::io::Write as _;
use std::process::{Command, Stdio};

/// The program run; found on `PATH` like every other tool an init container calls.
pub const NFT: &str = "nft";

/// Why applying a script failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started (not installed, not on `PATH`) or its pipes failed.
    #[error("running `{NFT} -f -` (is nftables installed and on PATH?)")]
    Spawn(#[source] std::io::Error),
    /// `nft` ran and refused the script (no CAP_NET_ADMIN, a kernel without nf_tables, a
    /// syntax error): its own message, which names the line.
    #[error("`{NFT} -f -` failed ({status}): {stderr}")]
    Failed {
        /// nft's exit status.
        status: std::process::ExitStatus,
        /// nft's standard error, trailing newlines trimmed: the operator's diagnosis.
        stderr: String,
    },
}

/// Applies `script` in the current network namespace. The whole file is one kernel batch: it
/// takes effect entirely or not at all.
pub fn apply(script: &str) -> Result<(), NftError> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    // nft reads all of its input before it writes anything, so writing the whole script before
    // reading its output cannot deadlock on a full pipe. A failed write (nft exited early) is
    // reported after nft's own message, which says why it stopped.
    let written = match child.stdin.take() {
        // Dropping stdin after the write closes it: nft sees the end of the file.
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Ok(()),
    };
    let output = child.wait_with_output().map_err(NftError::Spawn)?;
    if output.status.success() {
        return written.map_err(NftError::Spawn);
    }
    Err(NftError::Failed {
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr)
            .trim_end()
            .to_owned(),
    })
}
