//! The agent's state directory and the identity kept in it: where the directory lives, that it
//! is private to the agent's user, and the agent's own secret, generated once and re-read on
//! every later start so a restart keeps its identity. Also the host name, which is the default
//! app id.

use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::protocol::private_dir::make_private;

/// Name of the file holding a generated secret inside the state directory.
pub const SECRET_FILE: &str = "secret";
/// State directory of an agent running as root.
pub const ROOT_STATE_DIR: &str = "/var/lib/orange";
/// Random bytes in a generated secret (hex-encoded, so the secret is twice as many characters).
const SECRET_BYTES: usize = 32;

/// The default state directory: [`ROOT_STATE_DIR`] for root, else `$HOME/.local/state/orange`.
pub fn default_state_dir() -> Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    state_dir_for(euid, std::env::var_os("HOME"))
}

/// The default state directory for a user id and home directory.
fn state_dir_for(euid: u32, home: Option<OsString>) -> Result<PathBuf> {
    if euid == 0 {
        return Ok(PathBuf::from(ROOT_STATE_DIR));
    }
    match home.filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/orange")),
        None => bail!("HOME is not set, so there is no default state directory; pass --state DIR"),
    }
}

/// Reads the secret stored in `state_dir`, or generates, stores (mode 0600) and returns one. The
/// directory is made private first ([`prepare_state_dir`]), so a secret others could read is
/// closed before it is used.
pub fn load_or_create_secret(state_dir: &Path) -> Result<String> {
    prepare_state_dir(state_dir)?;
    let path = state_dir.join(SECRET_FILE);
    if let Some(secret) = read_stored_secret(&path)? {
        return Ok(secret);
    }
    let secret = generate_secret()?;
    store_secret(&path, &secret)?;
    tracing::info!(path = %path.display(), "generated a new agent secret");
    Ok(secret)
}

/// Creates the state directory 0700 if it is missing, refuses one that others can write to
/// (they could replace the secret or the journal), and makes one that others can read private
/// again, with everything in it.
pub fn prepare_state_dir(dir: &Path) -> Result<()> {
    let done = make_private(dir, "state directory")?;
    if let Some(mode) = done.dir_mode_was {
        tracing::warn!(dir = %dir.display(), old_mode = %format!("{mode:o}"), "the state directory was open to other users; made it 0700");
    }
    if done.entries > 0 {
        tracing::warn!(dir = %dir.display(), count = done.entries, "files in the state directory were open to other users; removed their group and other permissions");
    }
    Ok(())
}

/// The secret in `path`, or `None` when the file does not exist yet.
fn read_stored_secret(path: &Path) -> Result<Option<String>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let secret = text.trim();
    if secret.is_empty() {
        bail!("{} is empty; delete it to generate a new secret", path.display());
    }
    Ok(Some(secret.to_owned()))
}

/// 32 random bytes from the OS, hex-encoded.
fn generate_secret() -> Result<String> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot get random bytes: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Writes the secret to a temporary 0600 file, syncs it and renames it into place, so a crash
/// never leaves a half-written secret behind.
fn store_secret(path: &Path, secret: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", tmp.display()))?;
    // The rename itself must reach the disk, or a power cut could lose the secret the server
    // now knows this agent by.
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))
}

/// This machine's host name.
pub fn hostname() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot read the host name");
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    if name.is_empty() {
        bail!("the host name is empty; pass --appid");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn secret_is_generated_once_with_mode_0600_and_reused() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("nested/state");
        let first = load_or_create_secret(&dir)?;
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        let file_mode = fs::metadata(dir.join(SECRET_FILE))?.permissions().mode() & 0o777;
        assert_eq!(file_mode, 0o600);
        assert_eq!(fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
        assert_eq!(load_or_create_secret(&dir)?, first);
        let names: Vec<_> =
            fs::read_dir(&dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        assert_eq!(names, [SECRET_FILE]);
        let other = load_or_create_secret(&tmp.path().join("other"))?;
        assert_ne!(other, first);
        Ok(())
    }

    #[test]
    fn a_secret_others_can_read_is_made_private_before_it_is_used() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("state");
        fs::create_dir(&dir)?;
        fs::write(dir.join(SECRET_FILE), "s1\n")?;
        fs::set_permissions(dir.join(SECRET_FILE), fs::Permissions::from_mode(0o644))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        assert_eq!(load_or_create_secret(&dir)?, "s1");
        assert_eq!(fs::metadata(dir.join(SECRET_FILE))?.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
        Ok(())
    }

    #[test]
    fn empty_secret_file_is_refused() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        fs::write(tmp.path().join(SECRET_FILE), " \n")?;
        let err = load_or_create_secret(tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("is empty"), "{err:#}");
        Ok(())
    }

    #[test]
    fn default_state_dir_depends_on_root_and_home() -> Result<()> {
        assert_eq!(state_dir_for(0, Some("/home/x".into()))?, PathBuf::from(ROOT_STATE_DIR));
        assert_eq!(
            state_dir_for(1000, Some("/home/x".into()))?,
            PathBuf::from("/home/x/.local/state/orange")
        );
        assert!(state_dir_for(1000, None).is_err());
        Ok(())
    }

    #[test]
    fn hostname_is_not_empty() -> Result<()> {
        assert!(!hostname()?.is_empty());
        Ok(())
    }
}
