//! The HTTP API (DESIGN.md §3): poem-openapi operations, the generated OpenAPI document, Swagger
//! UI, the console page (`console`), CORS, the error shape and the request body deadline.
//! Handlers parse and authenticate at the edge, then make one call to the engine; they hold no
//! state of their own.

mod body_deadline;
mod collections;
mod console;
mod console_events;
mod document;
pub mod error;
mod expressions;
mod overview;
mod payload;
mod playground;
mod realtime;
mod records;
mod scrape;
mod security;
mod tail;

use std::sync::Arc;

use poem::http::{HeaderValue, Method, header};
use poem::middleware::Cors;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, OpenApiService, Tags};

use crate::auth::{Authenticator, Identity};
use crate::config::Config;
use crate::engine::Engine;
use crate::limits::{Rate, TrustedProxies};
use crate::pusher::{self, Driver};
use error::ApiError;
use security::{AdminToken, Credentials};

/// What every handler reaches through `Data<&App>`.
#[derive(Clone)]
pub struct App {
    pub engine: Engine,
    pub driver: Arc<Driver>,
    pub auth: Authenticator,
    /// Subscribe requests per second, per client.
    pub subscribe_rate: Arc<Rate>,
    /// Who a request's client is, behind trusted proxies.
    pub trusted_proxies: TrustedProxies,
    /// Claims copied into a signed-in user's `user_data`, besides `id`.
    pub user_data_claims: Vec<String>,
    /// The master key encrypted channels' shared secrets derive from.
    pub encryption_master_key: Option<[u8; 32]>,
    /// The console tail's one-time tickets.
    pub tickets: Arc<tail::Tickets>,
    /// In cluster mode, this node's name.
    pub node: Option<String>,
}

impl App {
    pub fn new(engine: Engine, driver: Arc<Driver>, config: &Config) -> Self {
        Self {
            engine,
            driver,
            auth: Authenticator::new(&config.admin_token, &config.jwt_secret),
            subscribe_rate: Arc::new(Rate::new(config.clients.subscribes_per_second)),
            trusted_proxies: config.trusted_proxies.clone(),
            user_data_claims: config.user_data_claims.clone(),
            encryption_master_key: config.encryption_master_key,
            tickets: Arc::default(),
            node: config
                .cluster
                .as_ref()
                .map(|cluster| cluster.node_id.clone()),
        }
    }

    fn identify(&self, credentials: &Credentials) -> Result<Identity, ApiError> {
        let token = match credentials {
            Credentials::Bearer(bearer) => Some(bearer.0.token.as_str()),
            Credentials::Guest => None,
        };
        Ok(self.auth.identify(token)?)
    }

    fn require_admin(&self, token: &AdminToken) -> Result<(), ApiError> {
        match self.auth.identify(Some(&token.0.token))? {
            Identity::Superuser => Ok(()),
            Identity::Guest | Identity::User(_) => {
                Err(ApiError::Forbidden(Json(error::ErrorBody {
                    message: "only the admin may manage collections".into(),
                    errors: None,
                })))
            }
        }
    }
}

#[derive(Tags)]
enum ApiTags {
    /// Subscriptions to collection changes.
    Realtime,
    /// Collections and their API rules (admin).
    Collections,
    /// Filters and API rules checked by the server's parser, and evaluated for a record and a
    /// subscriber by its matcher (admin).
    Expressions,
    /// Records; every write sends its change to the matching subscriptions.
    Records,
    /// What the console shows and sends: the tail's tickets, the overview, triggers (admin).
    Console,
    /// Liveness and Prometheus metrics, for operators (no token).
    System,
}

#[derive(poem_openapi::Object)]
#[oai(example)]
struct Health {
    /// Always `ok` while the server answers.
    status: String,
}

impl poem_openapi::types::Example for Health {
    fn example() -> Self {
        Health {
            status: "ok".into(),
        }
    }
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// The server is up.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<Health>),
}

struct SystemApi;

#[OpenApi(tag = "ApiTags::System")]
impl SystemApi {
    /// Liveness check
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Health {
            status: "ok".into(),
        }))
    }
}

type Apis = (
    realtime::RealtimeApi,
    records::RecordsApi,
    collections::CollectionsApi,
    expressions::ExpressionsApi,
    playground::PlaygroundApi,
    tail::TailApi,
    overview::OverviewApi,
    console_events::ConsoleEventsApi,
    SystemApi,
    scrape::MetricsApi,
);

fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            realtime::RealtimeApi,
            records::RecordsApi,
            collections::CollectionsApi,
            expressions::ExpressionsApi,
            playground::PlaygroundApi,
            tail::TailApi,
            overview::OverviewApi,
            console_events::ConsoleEventsApi,
            SystemApi,
            scrape::MetricsApi,
        ),
        "Velo Realtime",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Subscribe to a collection's changes with a filter; receive `created`, `updated` and \
         `deleted` events over the Pusher WebSocket protocol.",
    )
    // Relative: the server that serves this document (Swagger UI's "Try it out" calls it).
    .server(poem_openapi::ServerObject::new("/").description("This server"))
}

/// The OpenAPI document, as served at `/openapi.json` and committed under `openapi/`.
pub fn spec() -> String {
    document::edited(&service().spec())
}

/// Which methods each documented path accepts, read from the OpenAPI document itself.
struct AllowedMethods(Vec<(Vec<String>, Vec<&'static str>)>);

impl AllowedMethods {
    fn from_spec(spec: &str) -> Self {
        const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
        let spec: serde_json::Value =
            serde_json::from_str(spec).expect("the generated spec is JSON");
        let paths = spec["paths"].as_object().cloned().unwrap_or_default();
        Self(
            paths
                .into_iter()
                .map(|(path, operations)| {
                    let segments = path.split('/').map(str::to_owned).collect();
                    let methods = METHODS
                        .into_iter()
                        .filter(|method| operations.get(method.to_ascii_lowercase()).is_some())
                        .collect();
                    (segments, methods)
                })
                .collect(),
        )
    }

    /// The methods of the documented path `path` matches (`{param}` matches any segment).
    fn of(&self, path: &str) -> &[&'static str] {
        let segments: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template.iter().zip(&segments).all(|(t, s)| {
                        t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty())
                    })
            })
            .map_or(&[], |(_, methods)| methods.as_slice())
    }
}

/// Every route of the server.
pub fn routes(app: App, config: &Config) -> impl Endpoint + use<> {
    let service = service();
    let generated = service.spec();
    let document = document::edited(&generated);
    let allowed = std::sync::Arc::new(AllowedMethods::from_spec(&document));
    // Swagger UI embeds the document it is given: the edited one.
    let swagger = service.swagger_ui_html().replace(&generated, &document);
    assert!(
        swagger.contains(&document),
        "Swagger UI embeds the edited document"
    );
    let cors = match &config.cors_origins {
        None => Cors::new(),
        Some(origins) => Cors::new().allow_origins(origins.iter().map(String::as_str)),
    }
    .allow_methods([
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ])
    .allow_headers([
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        "x-socket-id".parse().expect("a header name"),
    ])
    .max_age(3600);
    let driver = app.driver.clone();
    let body_read_timeout = config.body_read_timeout;
    let counters = app.driver.metrics.clone();
    Route::new()
        .at("/app/:key", poem::get(pusher::websocket))
        .at(
            "/api/realtime/webhooks/pusher",
            poem::post(pusher::http_api::webhook),
        )
        .nest("/apps", pusher::http_api::routes())
        .nest("/console", console::routes())
        .at("/api/console/tail", poem::get(tail::connect))
        .nest("/", service)
        .nest(
            "/docs",
            Route::new().at(
                "/",
                poem::get(poem::endpoint::make_sync(move |_| {
                    poem::web::Html(swagger.clone())
                })),
            ),
        )
        .at(
            "/openapi.json",
            poem::get(poem::endpoint::make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(document.clone())
            })),
        )
        .around(refuse_malformed_authorization)
        .around(move |next, request| {
            body_deadline::enforce(next, request, body_read_timeout, counters.clone())
        })
        .with(cors)
        .data(app)
        .data(driver)
        .around(move |next, request| {
            let allowed = allowed.clone();
            async move {
                let (method, path) = (request.method().clone(), request.uri().path().to_owned());
                let started = std::time::Instant::now();
                let response = match next.call(request).await {
                    Ok(response) => response,
                    Err(error) => error::render(error, allowed.of(&path)),
                };
                tracing::info!(
                    %method,
                    %path,
                    status = response.status().as_u16(),
                    micros = started.elapsed().as_micros() as u64,
                    "request"
                );
                Ok(response)
            }
        })
}

/// An `Authorization` header that is not a bearer token is refused (401), rather than
/// letting the request continue as a guest.
async fn refuse_malformed_authorization<E: Endpoint>(
    next: E,
    request: Request,
) -> poem::Result<Response> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let bearer = value
            .to_str()
            .ok()
            .and_then(|text| text.get(..7))
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "));
        if !bearer {
            let mut response = ApiError::Unauthorized(Json(error::ErrorBody {
                message: "Unauthenticated: the Authorization header must be `Bearer <token>`."
                    .into(),
                errors: None,
            }))
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Ok(response);
        }
    }
    Ok(next.call(request).await?.into_response())
}
