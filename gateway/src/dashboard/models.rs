//! Models of a tenant, and a model's page: its versions, its aliases with their history, a
//! new version's upload, and moving an alias (with a confirmation step, and canary weights).

use actix_web::{HttpResponse, get, post, web};
use askama::Template;
use registry::aliases::{Alias, AliasTarget};
use registry::models::{Model, ModelFilter};
use registry::names::{AliasName, ModelName, Role, Task};
use registry::page::PageRequest;
use registry::versions::VersionStatus;
use serde::Deserialize;

use super::actors::{Actor, KeyNames};
use super::view::{Chrome, Session, bytes, when};
use super::{PageError, html, see_other};
use crate::AppState;
use crate::error::ApiError;

struct ModelRow {
    name: String,
    task: &'static str,
    description: String,
    created: String,
}

#[derive(Template)]
#[template(path = "models.html")]
struct ModelsPage {
    chrome: Chrome,
    tenant: String,
    models: Vec<ModelRow>,
    can_write: bool,
}

/// The tenant's models. Requires: viewer.
#[get("/admin/tenants/{tenant}/models")]
async fn list(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let tenant = session.principal.tenant(&state.registry, &path, Role::Viewer).await?;
    let models = state.registry.list_models(&tenant.id, &ModelFilter::default(), &PageRequest::first(1000)).await?;
    let view = ModelsPage {
        chrome: session.chrome("models"),
        tenant: tenant.name.to_string(),
        models: models
            .data
            .into_iter()
            .map(|m| ModelRow {
                name: m.name.to_string(),
                task: m.task.as_str(),
                description: m.description,
                created: when(m.created_at),
            })
            .collect(),
        can_write: session.can(Role::Developer),
    };
    html(&view)
}

#[derive(Deserialize)]
struct CreateForm {
    name: String,
    task: String,
    #[serde(default)]
    description: String,
}

/// Creates a model. Requires: developer.
#[post("/admin/tenants/{tenant}/models")]
async fn create(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, PageError> {
    let tenant = session.principal.tenant(&state.registry, &path, Role::Developer).await?;
    let name = ModelName::parse(form.name.trim())?;
    let task = Task::parse(&form.task)?;
    let actor = session.principal.actor();
    let model = state.registry.create_model(&actor, &tenant.id, &name, task, form.description.trim(), &[]).await?;
    Ok(see_other(&format!("/admin/tenants/{}/models/{}", tenant.name, model.name)))
}

struct VersionRow {
    number: i64,
    status: &'static str,
    architecture: String,
    files: usize,
    size: String,
    created_by: Actor,
    created: String,
    derived_from: String,
}

struct AliasRow {
    name: String,
    targets: String,
    updated_by: Actor,
    updated: String,
}

struct MoveRow {
    alias: String,
    from: String,
    to: String,
    by: Actor,
    at: String,
}

#[derive(Template)]
#[template(path = "model.html")]
struct ModelPage {
    chrome: Chrome,
    tenant: String,
    model: String,
    task: &'static str,
    description: String,
    versions: Vec<VersionRow>,
    /// Versions an alias may point at.
    ready: Vec<i64>,
    aliases: Vec<AliasRow>,
    history: Vec<MoveRow>,
    can_write: bool,
}

/// `v3`, or `v3 90% · v4 10%` for a split.
pub(super) fn targets_text(targets: &[AliasTarget]) -> String {
    match targets {
        [only] => format!("v{}", only.version),
        many => many.iter().map(|t| format!("v{} {}%", t.version, t.weight)).collect::<Vec<_>>().join(" · "),
    }
}

async fn model_of(
    state: &AppState,
    session: &Session,
    tenant: &str,
    model: &str,
    need: Role,
) -> Result<Model, PageError> {
    Ok(crate::routes::model_in(state, &session.principal, tenant, model, need).await?)
}

/// A model: versions, aliases and their moves, upload and alias forms. Requires: viewer.
#[get("/admin/tenants/{tenant}/models/{model}")]
async fn page(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, model) = path.into_inner();
    let model = model_of(&state, &session, &tenant, &model, Role::Viewer).await?;
    let versions = state.registry.list_versions(&model, None, &PageRequest::first(1000)).await?.data;
    let aliases = state.registry.aliases(&model).await?;
    let mut moves = Vec::new();
    for alias in &aliases {
        for m in state.registry.alias_history(&model, &alias.name).await? {
            moves.push((alias.name.to_string(), m));
        }
    }
    moves.sort_by_key(|(_, m)| std::cmp::Reverse(m.moved_at));
    let actors = (versions.iter().map(|v| v.created_by.as_str()))
        .chain(aliases.iter().map(|a| a.updated_by.as_str()))
        .chain(moves.iter().map(|(_, m)| m.moved_by.as_str()));
    let names = KeyNames::look_up(&state.registry, Some(&model.tenant_id), actors).await?;
    let text = |t: &Option<Vec<AliasTarget>>| t.as_deref().map(targets_text).unwrap_or_else(|| "–".into());
    let history = moves
        .into_iter()
        .map(|(alias, m)| MoveRow {
            alias,
            from: text(&m.from),
            to: text(&m.to),
            by: names.actor(&m.moved_by),
            at: when(m.moved_at),
        })
        .collect();
    let view = ModelPage {
        chrome: session.chrome("models"),
        tenant: tenant.clone(),
        model: model.name.to_string(),
        task: model.task.as_str(),
        description: model.description.clone(),
        ready: versions.iter().filter(|v| v.status == VersionStatus::Ready).map(|v| v.number).rev().collect(),
        versions: versions
            .into_iter()
            .rev()
            .map(|v| VersionRow {
                number: v.number,
                status: v.status.as_str(),
                architecture: v.architecture.unwrap_or_default(),
                files: v.files.len(),
                size: bytes(v.files.iter().map(|f| f.size).sum()),
                created_by: names.actor(&v.created_by),
                created: when(v.created_at),
                derived_from: v.derived_from.unwrap_or_default(),
            })
            .collect(),
        aliases: aliases.iter().map(|a| alias_row(a, &names)).collect(),
        history,
        can_write: session.can(Role::Developer),
    };
    html(&view)
}

fn alias_row(a: &Alias, names: &KeyNames) -> AliasRow {
    AliasRow {
        name: a.name.to_string(),
        targets: targets_text(&a.targets),
        updated_by: names.actor(&a.updated_by),
        updated: when(a.updated_at),
    }
}

/// Where an alias is to point: one version, or a canary split of two.
#[derive(Deserialize)]
struct MoveForm {
    alias: String,
    version: i64,
    /// Blank: no canary.
    #[serde(default)]
    canary_version: String,
    /// The canary's share in percent.
    #[serde(default)]
    canary_weight: String,
}

impl MoveForm {
    fn targets(&self) -> Result<(AliasName, Vec<AliasTarget>), ApiError> {
        let alias = AliasName::parse(self.alias.trim())?;
        let canary = super::optional_number("canary version", &self.canary_version)?;
        let targets = match canary {
            Some(canary) if canary != self.version => {
                let weight = super::optional_number("canary share", &self.canary_weight)?
                    .filter(|w| (1..=99).contains(w))
                    .ok_or_else(|| ApiError::invalid("a canary's share is 1 to 99 percent"))?;
                vec![
                    AliasTarget { version: self.version, weight: 100 - weight },
                    AliasTarget { version: canary, weight },
                ]
            }
            _ => vec![AliasTarget { version: self.version, weight: 100 }],
        };
        Ok((alias, targets))
    }
}

#[derive(Template)]
#[template(path = "alias_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    tenant: String,
    model: String,
    alias: String,
    from: String,
    to: String,
    version: i64,
    canary_version: String,
    canary_weight: String,
}

/// Shows what moving the alias would change, before it changes. Requires: developer.
#[get("/admin/tenants/{tenant}/models/{model}/aliases/move")]
async fn confirm_alias(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String)>,
    form: web::Query<MoveForm>,
) -> Result<HttpResponse, PageError> {
    let (tenant, model) = path.into_inner();
    let model = model_of(&state, &session, &tenant, &model, Role::Developer).await?;
    let (alias, targets) = form.targets()?;
    let from = match state.registry.alias(&model, &alias).await {
        Ok(current) => targets_text(&current.targets),
        Err(registry::Error::NotFound { .. }) => "nothing (a new alias)".into(),
        Err(e) => return Err(e.into()),
    };
    let view = ConfirmPage {
        chrome: session.chrome("models"),
        tenant,
        model: model.name.to_string(),
        alias: alias.to_string(),
        from,
        to: targets_text(&targets),
        version: form.version,
        canary_version: form.canary_version.clone(),
        canary_weight: form.canary_weight.clone(),
    };
    html(&view)
}

/// Moves the alias (atomically, audited). Requires: developer.
#[post("/admin/tenants/{tenant}/models/{model}/aliases")]
async fn set_alias(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String)>,
    form: web::Form<MoveForm>,
) -> Result<HttpResponse, PageError> {
    let (tenant, model) = path.into_inner();
    let model = model_of(&state, &session, &tenant, &model, Role::Developer).await?;
    let (alias, targets) = form.targets()?;
    state.registry.set_alias(&session.principal.actor(), &model, &alias, &targets).await?;
    Ok(see_other(&format!("/admin/tenants/{tenant}/models/{}#aliases", model.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(version: i64, canary: &str, weight: &str) -> MoveForm {
        MoveForm { alias: "production".into(), version, canary_version: canary.into(), canary_weight: weight.into() }
    }

    #[test]
    fn the_move_form_makes_one_target_or_a_canary_split() {
        let (alias, one) = form(2, "", "").targets().expect("one version");
        assert_eq!(alias.as_str(), "production");
        assert_eq!(one, [AliasTarget { version: 2, weight: 100 }]);
        let (_, split) = form(2, "3", "10").targets().expect("a canary");
        assert_eq!(split, [AliasTarget { version: 2, weight: 90 }, AliasTarget { version: 3, weight: 10 }]);
        assert_eq!(targets_text(&split), "v2 90% · v3 10%");
        assert_eq!(form(2, "2", "").targets().expect("the same version is no canary").1.len(), 1);
        for bad in ["", "0", "100", "ten"] {
            assert!(form(2, "3", bad).targets().is_err(), "canary share {bad:?} is refused");
        }
    }
}
