//! Seam's credentials, told apart by their prefix, and how each is sent.
//!
//! - API keys (`seam_…`) belong to one workspace and go as `Authorization: Bearer`.
//! - Personal access tokens (`seam_at…`) reach every workspace of their user: they go
//!   as Bearer with the `seam-workspace` header naming the workspace.
//! - Client session tokens (`seam_cst…`) and publishable keys (`seam_pk…`) are made for
//!   browsers and apps acting for one end user: they cannot list or read every code of
//!   a workspace, so they are refused at start with the reason.

use secrecy::{ExposeSecret, SecretString};

/// A credential the service can call Seam with.
#[derive(Clone)]
pub enum Credential {
    /// `seam_…`: one workspace's API key.
    ApiKey(SecretString),
    /// `seam_at…`: a personal access token, used for `workspace_id`.
    PersonalAccessToken { token: SecretString, workspace_id: String },
}

impl std::fmt::Debug for Credential {
    /// Never the secret: the kind, and the workspace of a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::ApiKey(_) => f.write_str("ApiKey(…)"),
            Credential::PersonalAccessToken { workspace_id, .. } => {
                write!(f, "PersonalAccessToken(…, workspace {workspace_id})")
            }
        }
    }
}

/// Why a credential cannot be used; the text names what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("is empty")]
    Empty,
    #[error("is not a Seam credential: API keys start with `seam_`, personal access tokens with `seam_at`")]
    Malformed,
    #[error(
        "is a client session token (`seam_cst…`): it acts for one end user of your app and cannot read every \
         access code of a workspace; use an API key or a personal access token"
    )]
    ClientSessionToken,
    #[error(
        "is a publishable key (`seam_pk…`): it is made for browsers and only starts Connect Webviews; use an API \
         key or a personal access token"
    )]
    PublishableKey,
    #[error(
        "is a personal access token (`seam_at…`) without a workspace_id: a token reaches every workspace of its \
             user, so the entry must name the one it is for"
    )]
    TokenWithoutWorkspace,
}

impl Credential {
    /// Classifies `secret` by its prefix. A personal access token needs the
    /// workspace it is used for; an API key may name one (checked against Seam at start).
    pub fn parse(secret: &SecretString, workspace_id: Option<&str>) -> Result<Credential, CredentialError> {
        let text = secret.expose_secret().trim();
        if text.is_empty() {
            return Err(CredentialError::Empty);
        }
        if text.starts_with("seam_cst") {
            return Err(CredentialError::ClientSessionToken);
        }
        if text.starts_with("seam_pk") {
            return Err(CredentialError::PublishableKey);
        }
        if text.starts_with("seam_at") {
            let workspace_id = workspace_id.filter(|w| !w.is_empty()).ok_or(CredentialError::TokenWithoutWorkspace)?;
            return Ok(Credential::PersonalAccessToken {
                token: SecretString::from(text.to_owned()),
                workspace_id: workspace_id.to_owned(),
            });
        }
        if text.starts_with("seam_") && text.len() > "seam_".len() {
            return Ok(Credential::ApiKey(SecretString::from(text.to_owned())));
        }
        Err(CredentialError::Malformed)
    }

    /// The headers that authenticate a request: `Authorization: Bearer …`, and
    /// `seam-workspace` for a personal access token.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Credential::ApiKey(key) => vec![("authorization", format!("Bearer {}", key.expose_secret()))],
            Credential::PersonalAccessToken { token, workspace_id } => vec![
                ("authorization", format!("Bearer {}", token.expose_secret())),
                ("seam-workspace", workspace_id.clone()),
            ],
        }
    }

    /// What kind of credential this is, for logs and `status`.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::ApiKey(_) => "api_key",
            Credential::PersonalAccessToken { .. } => "personal_access_token",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(secret: &str, workspace: Option<&str>) -> Result<Credential, CredentialError> {
        Credential::parse(&SecretString::from(secret.to_owned()), workspace)
    }

    #[test]
    fn each_kind_of_credential_is_told_apart_by_its_prefix() {
        assert!(matches!(parse("seam_test2bMS_94SrGUXuNR2JmJkjtvBQDg5c", None), Ok(Credential::ApiKey(_))));
        let token = parse("seam_at1_shorttoken_longtoken", Some("ws_1")).unwrap();
        assert!(matches!(&token, Credential::PersonalAccessToken { workspace_id, .. } if workspace_id == "ws_1"));
        assert_eq!(parse("seam_at1_x", None).unwrap_err(), CredentialError::TokenWithoutWorkspace);
        assert_eq!(parse("seam_at1_x", Some("")).unwrap_err(), CredentialError::TokenWithoutWorkspace);
        assert_eq!(parse("seam_cst1_x", Some("ws_1")).unwrap_err(), CredentialError::ClientSessionToken);
        assert_eq!(parse("seam_pk1_x", None).unwrap_err(), CredentialError::PublishableKey);
        for malformed in ["sk_live_x", "seam", "seam_", "Bearer seam_x"] {
            assert_eq!(parse(malformed, None).unwrap_err(), CredentialError::Malformed, "{malformed}");
        }
        assert_eq!(parse("  ", None).unwrap_err(), CredentialError::Empty);
    }

    #[test]
    fn a_token_sends_its_workspace_and_no_credential_is_ever_printed() {
        let token = parse("seam_at1_secretpart", Some("ws_9")).unwrap();
        let headers = token.headers();
        assert_eq!(headers[0], ("authorization", "Bearer seam_at1_secretpart".to_owned()));
        assert_eq!(headers[1], ("seam-workspace", "ws_9".to_owned()));
        let key = parse("seam_secretkey", None).unwrap();
        assert_eq!(key.headers().len(), 1);
        for credential in [token, key] {
            let printed = format!("{credential:?}");
            assert!(!printed.contains("secret"), "{printed}");
        }
        let refused = parse("seam_cst1_secretpart", None).unwrap_err().to_string();
        assert!(!refused.contains("secretpart") && refused.contains("client session token"), "{refused}");
    }
}
