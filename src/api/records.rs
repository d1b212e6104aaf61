//! The records API (DESIGN.md §5): `GET/POST /api/collections/{collection}/records`,
//! `GET/PUT/PATCH/DELETE /api/collections/{collection}/records/{id}`. Every write is durable
//! before its reply, and its change event reaches the matching subscriptions then.

use std::borrow::Cow;

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{Example, ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::{Value, json};

use super::error::{ApiError, Errors, operation_errors};
use super::payload::{BodyType, JsonBody, UnknownKeys};
use super::security::Credentials;
use super::{ApiTags, App};
use crate::engine::records::RecordMap;
use crate::engine::{ListQuery, RecordWrite};
use crate::pusher::protocol::SocketId;

/// A record: a JSON object. Schemaless, so every key is a field: in a reply
/// `{"id", "collection_id", ...fields, "created", "updated"}`; in a write, the fields (and, on
/// create, an optional `id`).
#[derive(Debug)]
pub struct Record(pub RecordMap);

impl Example for Record {
    fn example() -> Self {
        let Value::Object(map) = json!({
            "title": "Hello, realtime",
            "status": "active",
            "author": "alice",
            "views": 3
        }) else {
            unreachable!("an object literal")
        };
        Record(map)
    }
}

impl Type for Record {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "Record".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| MetaSchema {
            description: Some(
                "A record: a JSON object whose keys are its fields. Replies add the system \
                 fields `id`, `collection_id`, `created` and `updated`.",
            ),
            additional_properties: Some(Box::new(Value::schema_ref())),
            example: Self::example().to_json(),
            ..MetaSchema::new("object")
        });
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ParseFromJSON for Record {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::Object(map)) => Ok(Record(map)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for Record {
    fn to_json(&self) -> Option<Value> {
        Some(Value::Object(self.0.clone()))
    }
}

/// A record as stored, with its system fields.
#[derive(Object, Debug)]
#[oai(example)]
pub struct RecordData {
    pub data: Record,
}

impl Example for RecordData {
    fn example() -> Self {
        let mut record = Record::example();
        for (key, value) in [
            ("id", "k3vbd1iq0y8c2x7"),
            ("collection_id", "pbc_3142635823"),
            ("created", "2026-01-05 10:31:07.412Z"),
            ("updated", "2026-01-05 10:31:07.412Z"),
        ] {
            record.0.insert(key.into(), value.into());
        }
        RecordData { data: record }
    }
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
#[oai(example)]
pub struct RecordList {
    pub data: Vec<Record>,
    pub meta: ListMeta,
}

impl Example for RecordList {
    fn example() -> Self {
        RecordList {
            data: vec![RecordData::example().data],
            meta: ListMeta {
                page: 1,
                per_page: 15,
                total: 1,
                last_page: 1,
            },
        }
    }
}

#[derive(ApiResponse)]
pub enum ListResponse {
    /// A page of records.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<RecordList>),
}

#[derive(ApiResponse)]
pub enum RecordResponse {
    /// The record.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<RecordData>),
}

#[derive(ApiResponse)]
pub enum CreatedResponse {
    /// Created; the record with its system fields.
    #[oai(status = 201, content_type = "application/json")]
    Created(Json<RecordData>),
}

#[derive(ApiResponse)]
pub enum DeletedResponse {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// A record body: schemaless, so every key is a field and none is unknown.
impl BodyType for Record {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Ignored;
}

operation_errors! {
    List {
        400 => "A query parameter is malformed (`page` or `per_page` not a number).",
        401 => "The list rule admits no guest and no credentials were sent, or the token is invalid or expired.",
        403 => "The list rule is `SUPERUSER_ONLY` and the caller is not the admin.",
        404 => "No collection has this name or id.",
        422 => "The filter or the sort is invalid, or `per_page` is over 500; `errors` says which.",
        503 => "The engine is not answering; retry.",
    }
    View {
        401 => "The view rule admits no guest and no credentials were sent, or the token is invalid or expired.",
        403 => "The view rule is `SUPERUSER_ONLY` and the caller is not the admin.",
        404 => "No such collection or record, or the view rule hides the record from the caller.",
        503 => "The engine is not answering; retry.",
    }
    Create {
        400 => "The body is not JSON, or not `application/json`.",
        401 => "The create rule admits no guest and no credentials were sent, or the token is invalid or expired.",
        403 => "The create rule refuses this record for the caller, or a `record_creating` hook refused it with status 403.",
        404 => "No collection has this name or id.",
        409 => "A record with this id exists already.",
        413 => "The body, or the record, is over its size limit.",
        415 => "The body's charset is not UTF-8.",
        422 => "The body is not a JSON object, its `id` is invalid, or `X-Socket-ID` is not a socket id; `errors` says which. Or a `record_creating` hook refused it (`errors.hook`), or failed.",
        500 => "The server could not store the record; it may not have been created.",
        503 => "The engine (or the cluster's Redis) is not answering; retry.",
    }
    Write {
        400 => "The body is not JSON, or not `application/json`.",
        401 => "The update rule admits no guest and no credentials were sent, or the token is invalid or expired.",
        403 => "The update rule refuses this change for the caller, or a `record_updating` hook refused it with status 403.",
        404 => "No such collection or record.",
        413 => "The body, or the record, is over its size limit.",
        415 => "The body's charset is not UTF-8.",
        422 => "The body is not a JSON object, or `X-Socket-ID` is not a socket id; `errors` says which. Or a `record_updating` hook refused it (`errors.hook`), or failed.",
        500 => "The server could not store the change; it may not have taken effect.",
        503 => "The engine (or the cluster's Redis) is not answering; retry.",
    }
    Delete {
        401 => "The delete rule admits no guest and no credentials were sent, or the token is invalid or expired.",
        403 => "The delete rule refuses this deletion for the caller, or a `record_deleting` hook refused it with status 403.",
        404 => "No such collection or record.",
        422 => "`X-Socket-ID` is not a socket id, or a `record_deleting` hook refused the deletion (`errors.hook`), or failed.",
        500 => "The server could not store the deletion; it may not have taken effect.",
        503 => "The engine (or the cluster's Redis) is not answering; retry.",
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
        data: Record(record),
    })
}

/// The collection the default configuration declares, for the examples.
fn example_collection() -> String {
    "posts".into()
}

fn example_filter() -> Option<String> {
    Some("status = 'active'".into())
}

fn example_sort() -> Option<String> {
    Some("-created".into())
}

pub struct RecordsApi;

#[OpenApi(tag = "ApiTags::Records")]
impl RecordsApi {
    /// List records
    ///
    /// The list rule acts as an extra filter: only records it lets the caller see are listed.
    #[oai(
        path = "/api/collections/:collection/records",
        method = "get",
        operation_id = "listRecords"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        #[oai(example = "example_collection")]
        collection: Path<String>,
        /// An expression, e.g. `status = 'active' && views > 10`.
        #[oai(example = "example_filter")]
        filter: Query<Option<String>>,
        /// Fields to sort by, `-` for descending: `-created,title`.
        #[oai(example = "example_sort")]
        sort: Query<Option<String>>,
        /// From 1.
        page: Query<Option<u64>>,
        /// 1 to 500; 15 by default.
        per_page: Query<Option<u64>>,
    ) -> Result<ListResponse, Errors<List>> {
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
            data: page.records.into_iter().map(Record).collect(),
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
    #[oai(
        path = "/api/collections/:collection/records",
        method = "post",
        operation_id = "createRecord"
    )]
    async fn create(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        #[oai(example = "example_collection")]
        collection: Path<String>,
        /// The writer's Pusher socket id: it is not sent this change.
        #[oai(name = "X-Socket-ID")]
        socket_id: Header<Option<String>>,
        body: JsonBody<Record>,
    ) -> Result<CreatedResponse, Errors<Create>> {
        let change = RecordWrite::Create(body.0.0);
        let record = write(&app, &credentials, &collection.0, socket_id.0, change).await?;
        Ok(CreatedResponse::Created(data(record)))
    }

    /// View a record
    #[oai(
        path = "/api/collections/:collection/records/:id",
        method = "get",
        operation_id = "viewRecord"
    )]
    async fn view(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        #[oai(example = "example_collection")]
        collection: Path<String>,
        id: Path<String>,
    ) -> Result<RecordResponse, Errors<View>> {
        let identity = app.identify(&credentials)?;
        let record = app
            .engine
            .view_record(identity, &collection.0, id.0)
            .await?;
        Ok(RecordResponse::Ok(data(record)))
    }

    /// Replace a record's fields
    #[oai(
        path = "/api/collections/:collection/records/:id",
        method = "put",
        operation_id = "replaceRecord"
    )]
    async fn replace(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        #[oai(example = "example_collection")]
        collection: Path<String>,
        id: Path<String>,
        /// The writer's Pusher socket id: it is not sent this change.
        #[oai(name = "X-Socket-ID")]
        socket_id: Header<Option<String>>,
        body: JsonBody<Record>,
    ) -> Result<RecordResponse, Errors<Write>> {
        let change = RecordWrite::Replace(id.0, body.0.0);
        let record = write(&app, &credentials, &collection.0, socket_id.0, change).await?;
        Ok(RecordResponse::Ok(data(record)))
    }

    /// Update some of a record's fields
    #[oai(
        path = "/api/collections/:collection/records/:id",
        method = "patch",
        operation_id = "updateRecord"
    )]
    async fn update(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        #[oai(example = "example_collection")]
        collection: Path<String>,
        id: Path<String>,
        /// The writer's Pusher socket id: it is not sent this change.
        #[oai(name = "X-Socket-ID")]
        socket_id: Header<Option<String>>,
        body: JsonBody<Record>,
    ) -> Result<RecordResponse, Errors<Write>> {
        let change = RecordWrite::Merge(id.0, body.0.0);
        let record = write(&app, &credentials, &collection.0, socket_id.0, change).await?;
        Ok(RecordResponse::Ok(data(record)))
    }

    /// Delete a record
    #[oai(
        path = "/api/collections/:collection/records/:id",
        method = "delete",
        operation_id = "deleteRecord"
    )]
    async fn delete(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The collection's name or id.
        #[oai(example = "example_collection")]
        collection: Path<String>,
        id: Path<String>,
        /// The writer's Pusher socket id: it is not sent this change.
        #[oai(name = "X-Socket-ID")]
        socket_id: Header<Option<String>>,
    ) -> Result<DeletedResponse, Errors<Delete>> {
        let change = RecordWrite::Delete(id.0);
        write(&app, &credentials, &collection.0, socket_id.0, change).await?;
        Ok(DeletedResponse::Deleted)
    }
}
