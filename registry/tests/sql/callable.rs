//! `GET /v1/models` lists what `Registry::callable_models` answers: each model with a ready
//! version and each of its aliases. It used to ask per model; these tests hold the one query
//! to what those per-model calls (list, resolve `name`, list aliases) answer.

use registry::Registry;
use registry::aliases::AliasTarget;
use registry::models::ModelFilter;
use registry::names::{AliasName, ModelRef};
use registry::page::{MAX_LIMIT, PageRequest};
use registry::tenants::Tenant;

use crate::helpers::{actor, draft, each_database, model, ready, tenant};

/// The ids `/v1/models` listed before: `name` for each model whose latest reference
/// resolves, then `name:alias` for each of its aliases.
async fn ids_asked_per_model(registry: &Registry, tenant: &Tenant) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page = PageRequest::first(MAX_LIMIT);
    loop {
        let batch = registry.list_models(&tenant.id, &ModelFilter::default(), &page).await.expect("a page");
        for m in &batch.data {
            if registry.resolve(&tenant.id, &ModelRef::Latest(m.name.clone())).await.is_err() {
                continue;
            }
            ids.push(m.name.to_string());
            for alias in registry.aliases(m).await.expect("aliases") {
                ids.push(format!("{}:{}", m.name, alias.name));
            }
        }
        match (batch.next_cursor, batch.data.last()) {
            (Some(_), Some(last)) => page.after = Some(last.name.to_string()),
            _ => return ids,
        }
    }
}

async fn ids_in_one_query(registry: &Registry, tenant: &Tenant) -> Vec<String> {
    let mut ids = Vec::new();
    for m in registry.callable_models(&tenant.id).await.expect("callable models") {
        ids.push(m.name.to_string());
        ids.extend(m.aliases.iter().map(|alias| format!("{}:{alias}", m.name)));
    }
    ids
}

#[tokio::test]
async fn models_list_shows_models_with_a_ready_version_and_their_aliases_only() {
    for db in each_database("the callable models list").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        // Two ready versions, an alias split over both and one on the second.
        let alpha = model(r, &acme, "alpha").await;
        let (v1, v2) = (ready(r, &alpha).await.number, ready(r, &alpha).await.number);
        let split = [AliasTarget { version: v1, weight: 70 }, AliasTarget { version: v2, weight: 30 }];
        let prod = AliasName::parse("prod").expect("alias");
        r.set_alias(&actor(), &alpha, &prod, &split).await.expect("split alias");
        let canary = AliasName::parse("canary").expect("alias");
        r.set_alias(&actor(), &alpha, &canary, &[AliasTarget { version: v2, weight: 100 }]).await.expect("alias");
        // Only a draft: not callable.
        let beta = model(r, &acme, "beta").await;
        draft(r, &beta).await;
        // Its one ready version archived: not callable.
        let gamma = model(r, &acme, "gamma").await;
        let number = ready(r, &gamma).await.number;
        r.archive_version(&actor(), &gamma, number).await.expect("archiving");
        // Ready, then a newer draft: callable by its ready version.
        let delta = model(r, &acme, "delta").await;
        ready(r, &delta).await;
        draft(r, &delta).await;
        // Deleted: gone.
        let epsilon = model(r, &acme, "epsilon").await;
        ready(r, &epsilon).await;
        r.delete_model(&actor(), &epsilon).await.expect("deleting");
        // No version at all.
        model(r, &acme, "zeta").await;
        // Another tenant's ready model of the same name is not acme's.
        let other = tenant(r, "other").await;
        let other_alpha = model(r, &other, "alpha").await;
        ready(r, &other_alpha).await;
        let other_beta = model(r, &other, "beta").await;
        ready(r, &other_beta).await;

        let listed = ids_in_one_query(r, &acme).await;
        assert_eq!(listed, ["alpha", "alpha:canary", "alpha:prod", "delta"], "{backend}");
        assert_eq!(listed, ids_asked_per_model(r, &acme).await, "{backend}: as the per-model calls said");
        assert_eq!(ids_in_one_query(r, &other).await, ["alpha", "beta"], "{backend}");

        let alpha_listed = r.callable_models(&acme.id).await.expect("listed").remove(0);
        assert_eq!(alpha_listed.created_at, alpha.created_at, "{backend}: when the model was created");
    }
}

#[tokio::test]
async fn models_list_of_a_tenant_without_models_is_empty() {
    for db in each_database("an empty callable models list").await {
        let acme = tenant(&db.registry, "acme").await;
        assert!(db.registry.callable_models(&acme.id).await.expect("listed").is_empty(), "{}", db.backend);
    }
}
