//! What a management path names, parsed and looked up once: a handler takes a [`TenantPath`],
//! [`ModelPath`] or [`VersionPath`] and never a raw string. The gateway has already checked the
//! route table's need against the caller before any handler runs ([`crate::authorize`]); these
//! resolve the names with that same need, so a tenant-scoped caller naming another tenant, or
//! a name that does not parse, is "not found", exactly as a missing one.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use registry::models::Model;
use registry::names::Role;
use registry::tenants::Tenant;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{Required, schema::Type};

use super::table::{Need, Rule};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// The route table's rule of the request, put there by the gateway once it admitted it.
#[derive(Clone, Copy)]
pub(crate) struct Matched(pub &'static Rule);

/// The tenant `{tenant}` names.
pub struct TenantPath(pub Tenant);

/// The model `{tenant}/{model}` names.
pub struct ModelPath {
    pub tenant: Tenant,
    pub model: Model,
}

/// The version `{tenant}/{model}/{version}` names; the number is parsed, the version not read
/// (a handler reads it as it needs: with files, for an upload, …).
pub struct VersionPath {
    pub tenant: Tenant,
    pub model: Model,
    pub number: i64,
}

type Found<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// The request's state, principal and the role its route needs in the tenant it names.
fn context(req: &HttpRequest) -> Result<(web::Data<AppState>, Principal, Role), ApiError> {
    let bug = |what: &str| ApiError::internal(std::io::Error::other(format!("{what} (a bug)")));
    let state = req.app_data::<web::Data<AppState>>().cloned().ok_or_else(|| bug("application state is missing"))?;
    let principal = req
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| bug("a path extractor on an unauthenticated route"))?;
    let need = match req.extensions().get::<Matched>().map(|m| m.0.need) {
        Some(Need::Tenant(role)) => role,
        // Platform admins act in every tenant.
        Some(Need::PlatformAdmin) => Role::Admin,
        _ => return Err(bug("a path extractor on a route that names no tenant")),
    };
    Ok((state, principal, need))
}

fn segment(req: &HttpRequest, name: &str) -> String {
    req.match_info().get(name).unwrap_or_default().to_owned()
}

async fn tenant(req: &HttpRequest) -> Result<(web::Data<AppState>, Tenant), ApiError> {
    let (state, principal, need) = context(req)?;
    let tenant = principal.tenant(&state.registry, &segment(req, "tenant"), need).await?;
    Ok((state, tenant))
}

async fn model(req: &HttpRequest) -> Result<ModelPath, ApiError> {
    let (state, tenant) = tenant(req).await?;
    let model = super::model_of(&state, &tenant, &segment(req, "model")).await?;
    Ok(ModelPath { tenant, model })
}

impl FromRequest for TenantPath {
    type Error = ApiError;
    type Future = Found<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(TenantPath(tenant(&req).await?.1)) })
    }
}

impl FromRequest for ModelPath {
    type Error = ApiError;
    type Future = Found<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { model(&req).await })
    }
}

impl FromRequest for VersionPath {
    type Error = ApiError;
    type Future = Found<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let ModelPath { tenant, model } = model(&req).await?;
            let number = super::version_number(&segment(&req, "version"))?;
            Ok(VersionPath { tenant, model, number })
        })
    }
}

fn path_parameters(names: &[&str]) -> Vec<Parameter> {
    names
        .iter()
        .map(|name| {
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String)))
                .build()
        })
        .collect()
}

impl utoipa::IntoParams for TenantPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        path_parameters(&["tenant"])
    }
}

impl utoipa::IntoParams for ModelPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        path_parameters(&["tenant", "model"])
    }
}

impl utoipa::IntoParams for VersionPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        path_parameters(&["tenant", "model", "version"])
    }
}

/// A path's segment past the model or version it names, by its name in the route's pattern.
macro_rules! segments {
    ($($(#[doc = $doc:literal])* $name:ident { $($field:ident),+ })+) => {$(
        $(#[doc = $doc])*
        #[derive(serde::Deserialize, utoipa::IntoParams)]
        #[into_params(parameter_in = Path)]
        pub struct $name {
            $(pub $field: String,)+
        }
    )+};
}

segments! {
    /// `{alias}`.
    AliasSegment { alias }
    /// `{id}` of a key or an upload.
    IdSegment { id }
    /// `{path}`: a file's path in its version.
    FileSegment { path }
    /// `{id}/chunks/{index}` of an upload.
    ChunkSegment { id, index }
}
