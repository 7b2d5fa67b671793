//! Secrets as values: the `Secret` newtype whose `Debug` is masked, and reading a secret from a
//! file, the way every part takes a secret without it reaching argv.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// A secret string whose `Debug` prints `***`, so it never reaches a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for signing; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Reads a secret from a file, trimming surrounding whitespace; refuses an empty file.
pub fn read_secret_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_masked_and_a_file_is_trimmed() -> Result<()> {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
        let tmp = tempfile::tempdir()?;
        let file = tmp.path().join("s");
        std::fs::write(&file, " abc \n")?;
        assert_eq!(read_secret_file(&file)?, "abc");
        std::fs::write(&file, "\n")?;
        assert!(read_secret_file(&file).unwrap_err().to_string().ends_with(" is empty"));
        assert!(
            read_secret_file(&tmp.path().join("none")).unwrap_err().to_string().starts_with("cannot read")
        );
        Ok(())
    }
}
