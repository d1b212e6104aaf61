//! Bearer credentials as OpenAPI security schemes, so Swagger UI offers "Authorize" and
//! generated clients send the header. The token itself is checked by [`crate::auth`].

use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

/// A user's JWT (HS256) or the admin token.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct BearerToken(pub Bearer);

/// The admin token, where nothing else will do.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct AdminToken(pub Bearer);

/// Optional credentials: a bearer token, or none (a guest). A header that is present but not a
/// bearer token is refused before this is extracted (see `api::refuse_malformed_authorization`),
/// so that a bad credential is never taken for a guest.
#[derive(SecurityScheme)]
pub enum Credentials {
    Bearer(BearerToken),
    #[oai(fallback)]
    Guest,
}
