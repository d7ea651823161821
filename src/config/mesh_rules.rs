//! `[mesh]` rules the config check enforces and the mesh relies on: the size bounds of a member's
//! record and the `secret_file` key check. Here, below both, so the check and the mesh share one
//! definition (see `mesh::state` for why a record is bounded).

/// `[mesh] advertise` entries per member (the config check refuses more).
pub const MAX_SERVICES: usize = 32;
/// Bytes of an advertised service name (the config check refuses longer ones). With
/// [`MAX_SERVICES`] the services alone stay under 5 KiB, leaving the rest to reports and purges.
pub const MAX_SERVICE_NAME: usize = 128;

/// The shortest key line `secret_file` may hold, in bytes. HKDF stretches any line into a
/// 256-bit key, but cannot add entropy: a short passphrase is guessable offline from one
/// captured datagram. 32 bytes is what `openssl rand -base64 32` (44 characters) comfortably
/// exceeds, and rules out words and short phrases.
pub const MIN_KEY_BYTES: usize = 32;

/// Checks a `secret_file`'s text before use: at least one key, and every key (a non-empty
/// line, surrounding whitespace ignored) at least [`MIN_KEY_BYTES`] long. The config check
/// and the mesh start both call it, so `switchyard check` and a start agree.
pub fn check_secret_text(text: &str) -> Result<(), String> {
    let mut keys = 0;
    for (number, line) in text.lines().enumerate() {
        let key = line.trim();
        if key.is_empty() {
            continue;
        }
        keys += 1;
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "line {} holds a key of {} bytes; every key must be at least {MIN_KEY_BYTES} \
                 bytes (make one with `openssl rand -base64 32`)",
                number + 1,
                key.len()
            ));
        }
    }
    if keys == 0 {
        return Err("holds no key".to_owned());
    }
    Ok(())
}
