//! The records API (DESIGN.md §5): `GET/POST /api/collections/{collection}/records`,
//! `GET/PUT/PATCH/DELETE /api/collections/{collection}/records/{id}`. Every write is durable
//! before its reply, and its change event reaches the matching subscriptions then.

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;

use super::error::ApiError;
use super::payload::{BodyType, JsonBody, UnknownKeys};
use super::security::Credentials;
use super::{ApiTags, App};
use crate::engine::records::RecordMap;
use crate::engine::{ListQuery, RecordWrite};
use crate::pusher::protocol::SocketId;

/// One record: `{"id", "collection_id", ...fields, "created", "updated"}`.
#[derive(Object, Debug)]
pub struct RecordData {
    pub data: Value,
}

#[derive(Object, Debug)]
pub struct ListMeta {
    pub page: u64,
    pub per_page: u64,
    /// Records matching the filter and the list rule, on all pages.
    pub total: u64,
    pub last_page: u64,
}

#[derive(Object, Debug)]
pub struct RecordList {
    pub data: Vec<Value>,
    pub meta: ListMeta,
}

#[derive(ApiResponse)]
pub enum ListResponse {
    /// A page of records.
    #[oai(status = 200)]
    Ok(Json<RecordList>),
}

#[derive(ApiResponse)]
pub enum RecordResponse {
    /// The record.
    #[oai(status = 200)]
    Ok(Json<RecordData>),
    /// Created; the record with its system fields.
    #[oai(status = 201)]
    Created(Json<RecordData>),
}

#[derive(ApiResponse)]
pub enum DeletedResponse {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// A record body: schemaless, so every key is a field and none is unknown.
impl BodyType for Value {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Ignored;
}

fn object(body: Value) -> Result<RecordMap, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::invalid("body", "a record is a JSON object")),
    }
}

/// The writer's socket (Laravel Echo sends it as `X-Socket-ID`), excluded from the event.
pub(super) fn except(header: Option<String>) -> Result<Option<SocketId>, ApiError> {
    header
        .map(|text| {
            SocketId::parse(&text).ok_or_else(|| {
                ApiError::invalid("X-Socket-ID", format!("`{text}` is not a Pusher socket id"))
            })
        })
        .transpose()
}

/// Applies a write for the caller: the record as written (as it was, for a delete).
async fn write(
    app: &App,
    credentials: &Credentials,
    collection: &str,
    socket_id: Option<String>,
    write: RecordWrite,
) -> Result<RecordMap, ApiError> {
    let identity = app.identify(credentials)?;
    let except = except(socket_id)?;
    Ok(app
        .engine
        .write_record(identity, collection, write, except)
        .await?)
}

fn data(record: RecordMap) -> Json<RecordData> {
    Json(RecordData {
        data: Value::Object(record),
    })
}

pub struct RecordsApi;

#[OpenApi(tag = "ApiTags::Records")]
impl RecordsApi {
    /// List records
    ///
    /// The list rule acts as an extra filter: only records it lets the caller see are listed.
    #[oai(path = "/api/collections/:collection/records", method = "get")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        collection: Path<String>,
        /// An expression, e.g. `status = 'active' && views > 10`.
        filter: Query<Option<String>>,
        /// Fields to sort by, `-` for descending: `-created,title`.
        sort: Query<Option<String>>,
        /// From 1.
        page: Query<Option<u64>>,
        /// 1 to 500; 15 by default.
        per_page: Query<Option<u64>>,
    ) -> Result<ListResponse, ApiError> {
        let identity = app.identify(&credentials)?;
        let query = ListQuery {
            filter: filter.0.unwrap_or_default(),
            sort: sort.0.unwrap_or_default(),
            page: page.0,
            per_page: per_page.0,
        };
        let page = app
            .engine
            .list_records(identity, &collection.0, query)
            .await?;
        Ok(ListResponse::Ok(Json(RecordList {
            data: page.records.into_iter().map(Value::Object).collect(),
            meta: ListMeta {
                page: page.page as u64,
                per_page: page.per_page as u64,
                total: page.total as u64,
                last_page: page.last_page as u64,
            },
        })))
    }

    /// Create a record
    ///
    /// `id` may be given (`^[A-Za-z0-9_-]{1,64}$`); other system fields are ignored.
    #[oai(path = "/api/collections/:collection/records", method = "post")]
    async fn create(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        collection: Path<String>,
        /// The writer's Pusher socket id: it is not sent this change.
        #[oai(name = "X-Socket-ID")]
        socket_id: Header<Option<String>>,
        body: JsonBody<Value>,
    ) -> Result<RecordResponse, ApiError> {
        let change = RecordWrite::Create(object(body.0)?);
        let record = write(&app, &credentials, &collection.0, socket_id.0, change).await?;
        Ok(RecordResponse::Created(data(record)))
    }

    /// View a record
    #[oai(path = "/api/collections/:collection/records/:id", method = "get")]
    async fn view(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        collection: Path<String>,
        id: Path<String>,
    ) -> Result<RecordResponse, ApiError> {
        let identity = app.identify(&credentials)?;
        let record = app
            .engine
            .view_record(identity, &collection.0, id.0)
            .await?;
        Ok(RecordResponse::Ok(data(record)))
    }

    /// Replace a record's fields
    #[oai(path = "/api/collections/:collection/records/:id", method = "put")]
    async fn replace(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        collection: Path<String>,
        id: Path<String>,
        /// The writer's Pusher socket id: it is not sent this change.
        #[oai(name = "X-Socket-ID")]
        socket_id: Header<Option<String>>,
        body: JsonBody<Value>,
    ) -> Result<RecordResponse, ApiError> {
        let change = RecordWrite::Replace(id.0, object(body.0)?);
        let record = write(&app, &credentials, &collection.0, socket_id.0, change).await?;
        Ok(RecordResponse::Ok(data(record)))
    }

    /// Update some of a record's fields
    #[oai(path = "/api/collections/:collection/records/:id", method = "patch")]
    async fn update(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        collection: Path<String>,
        id: Path<String>,
        /// The writer's Pusher socket id: it is not sent this change.
        #[oai(name = "X-Socket-ID")]
        socket_id: Header<Option<String>>,
        body: JsonBody<Value>,
    ) -> Result<RecordResponse, ApiError> {
        let change = RecordWrite::Merge(id.0, object(body.0)?);
        let record = write(&app, &credentials, &collection.0, socket_id.0, change).await?;
        Ok(RecordResponse::Ok(data(record)))
    }

    /// Delete a record
    #[oai(path = "/api/collections/:collection/records/:id", method = "delete")]
    async fn delete(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        collection: Path<String>,
        id: Path<String>,
        /// The writer's Pusher socket id: it is not sent this change.
        #[oai(name = "X-Socket-ID")]
        socket_id: Header<Option<String>>,
    ) -> Result<DeletedResponse, ApiError> {
        let change = RecordWrite::Delete(id.0);
        write(&app, &credentials, &collection.0, socket_id.0, change).await?;
        Ok(DeletedResponse::Deleted)
    }
}
