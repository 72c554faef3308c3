//! A secret value (token, password) whose `Debug` and `Display` never show it.
//!
//! Invariant: the only way to read the value is `expose()`, called where it is
//! put into a header; logs and `Debug` output of configs print `***`.

#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// Where the value was read, so it can be read again when it expires.
    source: Option<SecretSource>,
}

/// Where a secret comes from: an environment variable, or the file a
/// `*_FILE` variable names (which an operator or an agent may rewrite, e.g.
/// with a fresh DC/OS token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File { var: String, path: std::path::PathBuf },
}

impl SecretSource {
    /// The variable an operator set.
    pub fn var(&self) -> &str {
        match self {
            SecretSource::Env(var) | SecretSource::File { var, .. } => var,
        }
    }

    /// Reads the value now; the error says what is wrong, never the value.
    pub fn read(&self) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| "is not set".to_owned())?,
            SecretSource::File { path, .. } => {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
            }
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(match self {
                SecretSource::Env(_) => "is empty".to_owned(),
                SecretSource::File { path, .. } => format!("{} is empty", path.display()),
            });
        }
        Ok(Secret { value, source: Some(self.clone()) })
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret { value: value.into(), source: None }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The value as its source holds it now: `None` when the secret has no
    /// source or the source cannot be read.
    pub fn reread(&self) -> Option<Secret> {
        self.source.as_ref().and_then(|s| s.read().ok())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_printed() {
        let s = super::Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.reread(), None);
    }

    #[test]
    fn reread_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "token=one\n").unwrap();
        let src = super::SecretSource::File { var: "X_FILE".into(), path: path.clone() };
        let s = src.read().unwrap();
        assert_eq!(s.expose(), "token=one");
        std::fs::write(&path, "token=two").unwrap();
        assert_eq!(s.reread().unwrap().expose(), "token=two");
        std::fs::write(&path, "").unwrap();
        assert!(src.read().unwrap_err().contains("is empty"));
        assert_eq!(src.var(), "X_FILE");
    }
}
