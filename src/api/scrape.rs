//! `GET /metrics`: the server's counters as Prometheus text, for scrapers (no token) and the
//! console's charts. The operation is in the OpenAPI document like any other; what the counters
//! are and how they are rendered belongs to `crate::metrics`.

use poem::web::Data;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::{ApiResponse, OpenApi};

use super::error::{ApiError, Errors, operation_errors};
use super::{ApiTags, App};
use crate::metrics::{CONTENT_TYPE, Gauges, Metrics};

/// Prometheus text (format 0.0.4), answered and documented with the encoder's own
/// `Content-Type`.
pub struct PrometheusText(String);

impl Payload for PrometheusText {
    const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        // What a fresh server with one connection and one subscription to `posts` answers.
        let example = Metrics::default()
            .render(Gauges {
                connections: 1,
                subscriptions: vec![("posts".into(), 1)],
                eval_errors: 0,
            })
            .expect("rendering to a String does not fail");
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some("Prometheus text format 0.0.4: `# HELP`, `# TYPE` and sample lines."),
            example: Some(example.into()),
            ..MetaSchema::new("string")
        }))
    }
}

impl IntoResponse for PrometheusText {
    fn into_response(self) -> Response {
        Response::builder().content_type(CONTENT_TYPE).body(self.0)
    }
}

#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// The counters now.
    #[oai(status = 200)]
    Ok(PrometheusText),
}

operation_errors! {
    GetMetrics {
        500 => "The text could not be rendered.",
        503 => "The engine did not answer with the subscription counts; retry.",
    }
}

pub struct MetricsApi;

#[OpenApi(tag = "ApiTags::System")]
impl MetricsApi {
    /// Prometheus metrics
    ///
    /// The server's counters in Prometheus text format 0.0.4; no token needed (keep it off the
    /// public internet if that matters). Families: `velo_connections`,
    /// `velo_subscriptions{collection}`, `velo_events_total`, `velo_deliveries_total`,
    /// `velo_slow_consumers_total`, `velo_filter_eval_errors_total`, the `velo_match_seconds`
    /// histogram, `velo_limited_total{limit}`, `velo_timeouts_total{kind}`, and the driver
    /// `pusher` and webhook counters. Each is described in docs/operations.md ("Metrics").
    #[oai(path = "/metrics", method = "get", operation_id = "getMetrics")]
    async fn metrics(&self, app: Data<&App>) -> Result<MetricsResponse, Errors<GetMetrics>> {
        let gauges = Gauges {
            connections: app.driver.hub.connection_count(),
            subscriptions: app.engine.subscription_counts().await?,
            eval_errors: app.engine.eval_errors(),
        };
        let text = app
            .driver
            .metrics
            .render(gauges)
            .map_err(|_| ApiError::internal("the metrics could not be rendered"))?;
        Ok(MetricsResponse::Ok(PrometheusText(text)))
    }
}
