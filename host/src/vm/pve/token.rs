//! The API token: `USER@REALM!TOKENID=SECRET`, from `$PVE_API_TOKEN` or a token file.
//! Its id names it in messages; its secret leaves only in the `Authorization` header,
//! and neither `Debug` nor an error ever shows it.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A parsed API token; its `Debug` shows the id only.
#[derive(Clone)]
pub struct ApiToken {
    id: String,
    whole: String,
}

/// Why a token is refused; never quotes the secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "{from} does not hold an API token of the form USER@REALM!TOKENID=SECRET{}",
        .id.as_ref().map(|i| format!(" (token id {i:?})")).unwrap_or_default()
    )]
    Malformed { from: String, id: Option<String> },
    #[error("reading the token file {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the token file is not trusted")]
    Untrusted(#[source] crate::trust::Untrusted),
    #[error(
        "the token file {} has mode {mode:o}: it must be readable by its owner only (0600)",
        .path.display()
    )]
    Mode { path: PathBuf, mode: u32 },
}

impl ApiToken {
    /// `USER@REALM!TOKENID=SECRET`; `from` says where it came from, for the error.
    pub fn parse(value: &str, from: &str) -> Result<ApiToken, TokenError> {
        let value = value.trim();
        let (id, secret) = value.split_once('=').unwrap_or((value, ""));
        let well_formed = id
            .split_once('@')
            .and_then(|(user, rest)| Some((user, rest.split_once('!')?)))
            .is_some_and(|(user, (realm, token))| {
                !user.is_empty() && !realm.is_empty() && !token.is_empty()
            });
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if !well_formed || !printable(id) || secret.is_empty() || !printable(secret) {
            return Err(TokenError::Malformed {
                from: from.to_owned(),
                id: (well_formed && printable(id)).then(|| id.to_owned()),
            });
        }
        Ok(ApiToken {
            id: id.to_owned(),
            whole: value.to_owned(),
        })
    }

    /// A token file: owned by root or the effective user up its path (`crate::trust`),
    /// and readable by its owner only.
    pub fn from_file(path: &Path) -> Result<ApiToken, TokenError> {
        crate::trust::check(path).map_err(TokenError::Untrusted)?;
        let meta = std::fs::metadata(path).map_err(|e| TokenError::Read(path.to_owned(), e))?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| TokenError::Read(path.to_owned(), e))?;
        ApiToken::parse(&text, &format!("the token file {}", path.display()))
    }

    /// `USER@REALM!TOKENID`: what names the token in messages.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `Authorization` header's value.
    pub fn header(&self) -> String {
        format!("PVEAPIToken={}", self.whole)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({}=..)", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SECRET: &str = "9d6a3f62-5c3e-4a57-9f5e-0123456789ab";

    #[test]
    fn a_token_is_its_id_and_a_secret_that_is_never_shown() {
        let t = ApiToken::parse(&format!(" vmguest@pve!install={SECRET}\n"), "env").unwrap();
        assert_eq!(t.id(), "vmguest@pve!install");
        assert_eq!(
            t.header(),
            format!("PVEAPIToken=vmguest@pve!install={SECRET}")
        );
        assert!(!format!("{t:?}").contains(SECRET));
        for bad in [
            format!("vmguest@pve={SECRET}"),
            format!("vmguest!install={SECRET}"),
            "vmguest@pve!install=".to_owned(),
            "vmguest@pve!install".to_owned(),
            format!("@pve!install={SECRET}"),
            format!("vmguest@pve!install={SECRET}\r\nX-Evil: 1"),
            format!("vm guest@pve!install={SECRET}"),
        ] {
            let e = ApiToken::parse(&bad, "$PVE_API_TOKEN").unwrap_err();
            let shown = crate::hresult::chain(&e);
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(shown.contains("$PVE_API_TOKEN"), "{shown}");
        }
    }

    #[test]
    fn a_token_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("pve.token");
        std::fs::write(&path, format!("root@pam!vmguest={SECRET}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = ApiToken::from_file(&path).unwrap_err();
        assert!(matches!(e, TokenError::Mode { mode: 0o640, .. }), "{e:?}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ApiToken::from_file(&path).unwrap().id(), "root@pam!vmguest");
        std::os::unix::fs::chown(&path, Some(65534), None)
            .expect("chown to uid 65534 (these tests run as root)");
        assert!(matches!(
            ApiToken::from_file(&path),
            Err(TokenError::Untrusted(_))
        ));
    }
}
