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
    /// The user's one id (DESIGN.md §15): the `id` claim when it is a non-empty string or an
    /// integer, else `sub` under the same condition. Never empty. Ownership, channel
    /// authorization and rules (`@request.auth.id`) all use this.
    pub id: String,
    /// Every claim of the token, as `@request.auth` sees them, with `id` set to the user's id.
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
    #[error("the token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    #[error(
        "the token has no `id` or `sub` claim (a non-empty string or an integer) to identify its user"
    )]
    NoSubject,
}

impl User {
    /// The user a verified token's claims identify (its `exp`, if any, already read): the id
    /// is found, and written back as the `id` claim.
    pub fn from_claims(
        mut claims: Map<String, Value>,
        expires_at: Option<u64>,
    ) -> Result<Self, AuthError> {
        let (id, id_claim) = ["id", "sub"]
            .iter()
            .find_map(|name| match claims.get(*name) {
                Some(Value::String(s)) if !s.is_empty() => {
                    Some((s.clone(), Value::String(s.clone())))
                }
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                    Some((n.to_string(), Value::Number(n.clone())))
                }
                _ => None,
            })
            .ok_or(AuthError::NoSubject)?;
        // Rules see the same id the subscription's owner has (an `"id": ""` or `null` claim
        // would otherwise make `@request.auth.id` disagree with the owner).
        claims.insert("id".into(), id_claim);
        Ok(User {
            id,
            claims,
            expires_at,
        })
    }
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
            .map_err(|error| {
            AuthError::InvalidToken(match error.kind() {
                // jsonwebtoken's own words for this one are the bare `InvalidToken`.
                jsonwebtoken::errors::ErrorKind::InvalidToken => {
                    "it is neither the admin token nor a JWT (three base64url parts joined by dots)"
                        .into()
                }
                _ => error.to_string(),
            })
        })?;
        let claims = data.claims;
        // NumericDate (RFC 7519) may have fractions of a second: `exp` is rounded down and
        // `nbf` up, so that a token is never taken for valid outside its window.
        let seconds = |name: &str, round: fn(f64) -> f64| match claims.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .or_else(|| {
                    value
                        .as_f64()
                        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                        .map(|seconds| round(seconds) as u64)
                })
                .map(Some)
                .ok_or_else(|| {
                    AuthError::InvalidToken(format!("`{name}` is not a number of seconds"))
                }),
        };
        let expires_at = seconds("exp", f64::floor)?;
        let not_before = seconds("nbf", f64::ceil)?;
        let now = now_secs();
        if expires_at.is_some_and(|exp| exp <= now) {
            return Err(AuthError::Expired);
        }
        if not_before.is_some_and(|nbf| nbf > now) {
            return Err(AuthError::NotYetValid);
        }
        User::from_claims(claims, expires_at)
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

    fn signed(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"jwt-secret").unwrap(),
        )
        .unwrap()
    }

    fn user(claims: Value) -> Result<Arc<User>, AuthError> {
        match authenticator().identify(Some(&signed(claims)))? {
            Identity::User(user) => Ok(user),
            other => panic!("a token identifies a user, not {other:?}"),
        }
    }

    #[test]
    fn not_before_is_honoured_like_expiry() {
        let now = now_secs();
        assert_eq!(
            user(json!({"sub": "u1", "nbf": now + 86_400})),
            Err(AuthError::NotYetValid),
            "valid from tomorrow"
        );
        assert!(user(json!({"sub": "u1", "nbf": now})).is_ok());
        assert!(user(json!({"sub": "u1", "nbf": now - 60, "exp": now + 60})).is_ok());
        assert!(matches!(
            user(json!({"sub": "u1", "nbf": "tomorrow"})),
            Err(AuthError::InvalidToken(_))
        ));
        // Fractions of a second, as some issuers write them.
        assert!(
            user(json!({"sub": "u1", "nbf": now as f64 - 0.5, "exp": now as f64 + 60.5})).is_ok()
        );
        assert_eq!(
            user(json!({"sub": "u1", "nbf": now as f64 + 3600.5})),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            user(json!({"sub": "u1", "exp": now as f64 - 0.5})),
            Err(AuthError::Expired)
        );
        assert!(matches!(
            user(json!({"sub": "u1", "exp": -1.5})),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn a_user_has_one_id_for_ownership_and_rules() {
        for (claims, id, auth_id) in [
            (json!({"sub": "alice", "id": ""}), "alice", json!("alice")),
            (json!({"sub": "alice", "id": null}), "alice", json!("alice")),
            (json!({"sub": "alice", "id": 1.5}), "alice", json!("alice")),
            (
                json!({"sub": "alice", "id": {"x": 1}}),
                "alice",
                json!("alice"),
            ),
            (json!({"sub": "alice", "id": "a1"}), "a1", json!("a1")),
            (
                json!({"id": 9007199254740993u64}),
                "9007199254740993",
                json!(9007199254740993u64),
            ),
            (json!({"sub": 42}), "42", json!(42)),
        ] {
            let user = user(claims.clone()).unwrap();
            assert_eq!(user.id, id, "{claims}");
            assert_eq!(user.claims["id"], auth_id, "{claims}: @request.auth.id");
        }
        for claims in [
            json!({"sub": "", "id": ""}),
            json!({"id": null}),
            json!({"sub": true}),
            json!({"id": -0.5}),
        ] {
            assert_eq!(user(claims.clone()), Err(AuthError::NoSubject), "{claims}");
        }
    }

    fn token_without_signature(token: &str) -> &str {
        &token[..token.rfind('.').unwrap()]
    }
}
