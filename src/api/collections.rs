//! The admin API for collections and their rules: `GET/POST /api/collections`,
//! `GET/PATCH/DELETE /api/collections/{name}` (name or id).

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::{Example, MaybeUndefined};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::{ApiError, Errors, operation_errors};
use super::payload::{BodyType, JsonBody, UnknownKeys};
use super::security::AdminToken;
use super::{ApiTags, App};
use crate::engine::{CollectionInfo, CollectionName, RuleTexts, RulesPatch};

/// The five API rules. Each is an expression, `""` (anyone) or `null` (`SUPERUSER_ONLY`, also
/// what an absent rule means).
#[derive(Object, Debug, Default)]
pub struct ApiRules {
    /// Who may list records and subscribe to their changes.
    #[oai(nullable)]
    pub list: Option<String>,
    /// Who may view one record.
    #[oai(nullable)]
    pub view: Option<String>,
    /// Who may create a record.
    #[oai(nullable)]
    pub create: Option<String>,
    /// Who may update a record.
    #[oai(nullable)]
    pub update: Option<String>,
    /// Who may delete a record.
    #[oai(nullable)]
    pub delete: Option<String>,
}

/// Rules to change: a rule that is absent stays as it is; `null` makes it `SUPERUSER_ONLY`.
#[derive(Object, Debug, Default)]
pub struct ApiRulesPatch {
    #[oai(nullable)]
    pub list: MaybeUndefined<String>,
    #[oai(nullable)]
    pub view: MaybeUndefined<String>,
    #[oai(nullable)]
    pub create: MaybeUndefined<String>,
    #[oai(nullable)]
    pub update: MaybeUndefined<String>,
    #[oai(nullable)]
    pub delete: MaybeUndefined<String>,
}

/// A new collection. Unknown keys, here or in `api_rules`, are refused (422): a misspelt rule
/// (`lisst`) would otherwise quietly leave that rule `SUPERUSER_ONLY` (DESIGN.md §15).
#[derive(Object, Debug)]
#[oai(example)]
pub struct NewCollection {
    /// 1 to 63 letters, digits or `_`, not starting with a digit.
    pub name: String,
    /// Absent or `null`: every rule is `SUPERUSER_ONLY`.
    #[oai(nullable)]
    pub api_rules: Option<ApiRules>,
    /// Send the events of subscriptions a guest could not have made on
    /// `private-encrypted-` channels, sealed with NaCl secretbox (pusher-js decrypts them with
    /// the `shared_secret` our channel authorization answers), so an external Pusher service
    /// never sees record data. Public subscriptions stay public and plain. Needs the server's
    /// `VELO_ENCRYPTION_MASTER_KEY` (else 422). Absent or `null`: false.
    #[oai(nullable)]
    pub encrypted: Option<bool>,
}

/// Changes to a collection. Unknown keys, here or in `api_rules`, are refused (422): a misspelt
/// rule would otherwise quietly stay as it was.
#[derive(Object, Debug)]
#[oai(example)]
pub struct CollectionPatch {
    /// A new name; absent or `null` keeps it.
    #[oai(nullable, skip_serializing_if_is_none)]
    pub name: Option<String>,
    /// Rules to change; absent or `null` changes none.
    #[oai(nullable)]
    pub api_rules: Option<ApiRulesPatch>,
    /// A new `encrypted` option; absent or `null` keeps it. A change ends the collection's
    /// non-public subscriptions (event `ended`, reason `rule_changed`): their clients
    /// subscribe again and get a channel of the new kind.
    #[oai(nullable, skip_serializing_if_is_none)]
    pub encrypted: Option<bool>,
}

/// Rules anyone passes to read, a signed-in user to create, and only the author to change.
fn example_rules() -> ApiRules {
    ApiRules {
        list: Some(String::new()),
        view: Some(String::new()),
        create: Some("@request.auth.id != ''".into()),
        update: Some("@request.auth.id = author".into()),
        delete: Some("@request.auth.id = author".into()),
    }
}

impl Example for NewCollection {
    fn example() -> Self {
        NewCollection {
            name: "articles".into(),
            api_rules: Some(example_rules()),
            encrypted: Some(false),
        }
    }
}

impl Example for CollectionPatch {
    fn example() -> Self {
        CollectionPatch {
            name: None,
            api_rules: Some(ApiRulesPatch {
                list: MaybeUndefined::Value("status = 'published'".into()),
                ..ApiRulesPatch::default()
            }),
            encrypted: None,
        }
    }
}

impl Example for Collection {
    fn example() -> Self {
        Collection {
            id: "pbc_3142635823".into(),
            name: "articles".into(),
            api_rules: example_rules(),
            encrypted: false,
        }
    }
}

impl Example for CollectionData {
    fn example() -> Self {
        CollectionData {
            data: Collection::example(),
        }
    }
}

impl Example for CollectionList {
    fn example() -> Self {
        CollectionList {
            data: vec![Collection::example()],
        }
    }
}

impl BodyType for NewCollection {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Refused;
}

impl BodyType for CollectionPatch {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Refused;
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct Collection {
    /// 15 characters, assigned at creation.
    pub id: String,
    pub name: String,
    pub api_rules: ApiRules,
    /// Non-public subscriptions' events go encrypted on `private-encrypted-` channels.
    pub encrypted: bool,
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct CollectionData {
    pub data: Collection,
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct CollectionList {
    pub data: Vec<Collection>,
}

#[derive(ApiResponse)]
pub enum ListResponse {
    /// Every collection, by name.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<CollectionList>),
}

#[derive(ApiResponse)]
pub enum CollectionResponse {
    /// The collection.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<CollectionData>),
}

#[derive(ApiResponse)]
pub enum CreatedResponse {
    /// Created.
    #[oai(status = 201, content_type = "application/json")]
    Created(Json<CollectionData>),
}

#[derive(ApiResponse)]
pub enum DeletedResponse {
    /// Deleted; its subscriptions have ended.
    #[oai(status = 204)]
    Deleted,
}

impl From<CollectionInfo> for CollectionData {
    fn from(info: CollectionInfo) -> Self {
        CollectionData {
            data: Collection {
                id: info.id,
                name: info.name,
                api_rules: ApiRules {
                    list: info.rules.list,
                    view: info.rules.view,
                    create: info.rules.create,
                    update: info.rules.update,
                    delete: info.rules.delete,
                },
                encrypted: info.encrypted,
            },
        }
    }
}

fn patch(value: MaybeUndefined<String>) -> Option<Option<String>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(text) => Some(Some(text)),
    }
}

fn name(text: &str) -> Result<CollectionName, ApiError> {
    CollectionName::parse(text).map_err(|message| ApiError::invalid("name", message))
}

operation_errors! {
    List {
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
    }
    Create {
        400 => "The body is not JSON, or not `application/json`.",
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
        413 => "The body is over its size limit.",
        415 => "The body's charset is not UTF-8.",
        422 => "The name is invalid or taken, a rule does not parse, a key is unknown, or `encrypted` lacks the server's master key; `errors` says which.",
        500 => "The server could not store the collection; it may not have been created.",
        503 => "The engine (or the cluster's Redis) is not answering; retry.",
    }
    View {
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
        404 => "No collection has this name or id.",
    }
    Update {
        400 => "The body is not JSON, or not `application/json`.",
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
        404 => "No collection has this name or id.",
        413 => "The body is over its size limit.",
        415 => "The body's charset is not UTF-8.",
        422 => "The new name is invalid or taken, a rule does not parse, a key is unknown, or `encrypted` lacks the server's master key; `errors` says which.",
        500 => "The server could not store the change; it may not have taken effect.",
        503 => "The engine (or the cluster's Redis) is not answering; retry.",
    }
    Delete {
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
        404 => "No collection has this name or id.",
        500 => "The server could not store the deletion; it may not have taken effect.",
        503 => "The engine (or the cluster's Redis) is not answering; retry.",
    }
}

pub struct CollectionsApi;

#[OpenApi(tag = "ApiTags::Collections")]
impl CollectionsApi {
    /// List collections
    #[oai(
        path = "/api/collections",
        method = "get",
        operation_id = "listCollections"
    )]
    async fn list(&self, app: Data<&App>, admin: AdminToken) -> Result<ListResponse, Errors<List>> {
        app.require_admin(&admin)?;
        let collections = app.engine.collections();
        Ok(ListResponse::Ok(Json(CollectionList {
            data: collections
                .into_iter()
                .map(|info| CollectionData::from(info).data)
                .collect(),
        })))
    }

    /// Create a collection
    ///
    /// Rules are parsed when saved: bad rules are a 422, each under `errors["api_rules.<rule>"]`;
    /// `SUPERUSER_ONLY`, in any case, is stored as `null`. `encrypted: true` without the
    /// server's master key is a 422 under `errors.encrypted`.
    #[oai(
        path = "/api/collections",
        method = "post",
        operation_id = "createCollection"
    )]
    async fn create(
        &self,
        app: Data<&App>,
        admin: AdminToken,
        body: JsonBody<NewCollection>,
    ) -> Result<CreatedResponse, Errors<Create>> {
        app.require_admin(&admin)?;
        let request = body.0;
        let name = name(&request.name)?;
        let rules = request.api_rules.unwrap_or_default();
        let rules = RuleTexts {
            list: rules.list,
            view: rules.view,
            create: rules.create,
            update: rules.update,
            delete: rules.delete,
        };
        let info = app
            .engine
            .create_collection(name, rules, request.encrypted.unwrap_or(false))
            .await?;
        Ok(CreatedResponse::Created(Json(info.into())))
    }

    /// View a collection
    #[oai(
        path = "/api/collections/:collection",
        method = "get",
        operation_id = "viewCollection"
    )]
    async fn view(
        &self,
        app: Data<&App>,
        admin: AdminToken,
        /// The collection's name or id.
        collection: Path<String>,
    ) -> Result<CollectionResponse, Errors<View>> {
        app.require_admin(&admin)?;
        let info = app.engine.collection(&collection.0)?;
        Ok(CollectionResponse::Ok(Json(info.into())))
    }

    /// Rename a collection, change its rules or its `encrypted` option
    ///
    /// Subscriptions are matched under the new rules at once; those whose subscriber the new
    /// list rule no longer admits end, and so do the non-public ones when `encrypted` changes.
    #[oai(
        path = "/api/collections/:collection",
        method = "patch",
        operation_id = "updateCollection"
    )]
    async fn update(
        &self,
        app: Data<&App>,
        admin: AdminToken,
        /// The collection's name or id.
        collection: Path<String>,
        body: JsonBody<CollectionPatch>,
    ) -> Result<CollectionResponse, Errors<Update>> {
        app.require_admin(&admin)?;
        let request = body.0;
        let new_name = request.name.as_deref().map(name).transpose()?;
        let rules = request.api_rules.unwrap_or_default();
        let rules = RulesPatch {
            list: patch(rules.list),
            view: patch(rules.view),
            create: patch(rules.create),
            update: patch(rules.update),
            delete: patch(rules.delete),
        };
        let info = app
            .engine
            .update_collection(&collection.0, new_name, rules, request.encrypted)
            .await?;
        Ok(CollectionResponse::Ok(Json(info.into())))
    }

    /// Delete a collection and end its subscriptions
    #[oai(
        path = "/api/collections/:collection",
        method = "delete",
        operation_id = "deleteCollection"
    )]
    async fn delete(
        &self,
        app: Data<&App>,
        admin: AdminToken,
        /// The collection's name or id.
        collection: Path<String>,
    ) -> Result<DeletedResponse, Errors<Delete>> {
        app.require_admin(&admin)?;
        app.engine.delete_collection(&collection.0).await?;
        Ok(DeletedResponse::Deleted)
    }
}
