//! Who is calling: the guest, a user holding an HS256 JWT, or the superuser holding the admin
//! token (DESIGN.md §3, §9). Knows nothing of HTTP beyond the bearer token string.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::filter::Auth;

/// The caller of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Identity {
    Guest,
    /// Shared: a subscription keeps its subscriber's identity, and messages carry it cheaply.
    User(Arc<User>),
    /// Holder of the admin token: bypasses every rule.
    Superuser,
}

/// A user authenticated by a JWT.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    /// `@request.auth.id`: the `id` claim, else `sub`. Never empty.
    pub id: String,
    /// Every claim of the token, as `@request.auth` sees them (`id` filled in from `sub`).
    pub claims: Map<String, Value>,
    /// The token's `exp` (seconds since the epoch), if it has one.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// The claims expressions see as `@request.auth` (none for the guest and the superuser).
    pub fn auth(&self) -> Auth {
        match self {
            Identity::User(user) => Auth::from_claims(&user.claims),
            Identity::Guest | Identity::Superuser => Auth::guest(),
        }
    }

    pub fn is_superuser(&self) -> bool {
        matches!(self, Identity::Superuser)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is invalid: {0}")]
    InvalidToken(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token has no `sub` or `id` claim to identify its user")]
    NoSubject,
}

/// Checks bearer tokens against the configured admin token and JWT secret.
#[derive(Clone)]
pub struct Authenticator {
    admin_token: String,
    decoding: DecodingKey,
    encoding: EncodingKey,
}

impl Authenticator {
    /// # Panics
    ///
    /// If `jwt_secret` is empty; [`crate::config`] refuses an empty secret.
    pub fn new(admin_token: &str, jwt_secret: &str) -> Self {
        const NON_EMPTY: &str = "the configuration guarantees a non-empty JWT secret";
        Self {
            admin_token: admin_token.to_owned(),
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()).expect(NON_EMPTY),
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()).expect(NON_EMPTY),
        }
    }

    /// The identity a bearer token proves; `None` is a guest. A bad token is an error, never a
    /// guest.
    pub fn identify(&self, bearer: Option<&str>) -> Result<Identity, AuthError> {
        let Some(token) = bearer else {
            return Ok(Identity::Guest);
        };
        if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) {
            return Ok(Identity::Superuser);
        }
        self.verify(token)
            .map(|user| Identity::User(Arc::new(user)))
    }

    fn verify(&self, token: &str) -> Result<User, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is optional (DESIGN.md §9) and checked below without leeway.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map_err(|error| AuthError::InvalidToken(error.to_string()))?;
        let claims = data.claims;
        let expires_at = match claims.get("exp") {
            None => None,
            Some(exp) => Some(exp.as_u64().ok_or_else(|| {
                AuthError::InvalidToken("`exp` is not a number of seconds".into())
            })?),
        };
        if expires_at.is_some_and(|exp| exp <= now_secs()) {
            return Err(AuthError::Expired);
        }
        let id = ["id", "sub"]
            .iter()
            .find_map(|name| match claims.get(*name) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .ok_or(AuthError::NoSubject)?;
        let mut claims = claims;
        claims
            .entry("id")
            .or_insert_with(|| Value::String(id.clone()));
        Ok(User {
            id,
            claims,
            expires_at,
        })
    }

    /// Signs a development token for `sub` with extra claims, valid for `ttl_secs` (if any).
    pub fn mint(&self, sub: &str, extra: Map<String, Value>, ttl_secs: Option<u64>) -> String {
        let mut claims = extra;
        claims.insert("sub".into(), Value::String(sub.into()));
        let now = now_secs();
        claims.insert("iat".into(), now.into());
        if let Some(ttl) = ttl_secs {
            claims.insert("exp".into(), (now + ttl).into());
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of a JSON map cannot fail")
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Compares secrets without revealing, through timing, how long a prefix matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new("admin-secret", "jwt-secret")
    }

    #[test]
    fn identifies_guests_admins_and_users() {
        let auth = authenticator();
        assert_eq!(auth.identify(None), Ok(Identity::Guest));
        assert_eq!(auth.identify(Some("admin-secret")), Ok(Identity::Superuser));
        let extra = json!({"role": "editor"}).as_object().unwrap().clone();
        let token = auth.mint("u1", extra, Some(3600));
        let Ok(Identity::User(user)) = auth.identify(Some(&token)) else {
            panic!("a minted token identifies its user");
        };
        assert_eq!(user.id, "u1");
        assert_eq!(user.claims["role"], "editor");
        assert_eq!(user.claims["id"], "u1", "`id` falls back to `sub`");
        assert!(user.expires_at.unwrap() > now_secs());
    }

    #[test]
    fn refuses_bad_tokens() {
        let auth = authenticator();
        assert!(matches!(
            auth.identify(Some("nonsense")),
            Err(AuthError::InvalidToken(_))
        ));
        let other = Authenticator::new("x", "another-secret").mint("u1", Map::new(), None);
        assert!(matches!(
            auth.identify(Some(&other)),
            Err(AuthError::InvalidToken(_))
        ));
        let mut claims = Map::new();
        claims.insert("exp".into(), (now_secs() - 1).into());
        let expired = auth.mint("u1", claims, None);
        assert_eq!(auth.identify(Some(&expired)), Err(AuthError::Expired));
        let no_subject = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"role": "x"}),
            &EncodingKey::from_secret(b"jwt-secret").unwrap(),
        )
        .unwrap();
        assert_eq!(auth.identify(Some(&no_subject)), Err(AuthError::NoSubject));
        let unsigned = format!(
            "{}.",
            token_without_signature(&auth.mint("u1", Map::new(), None))
        );
        assert!(auth.identify(Some(&unsigned)).is_err());
    }

    fn token_without_signature(token: &str) -> &str {
        &token[..token.rfind('.').unwrap()]
    }
}
