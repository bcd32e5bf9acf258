//! Models: names unique per tenant, filters, pages, changes and deletion.

use registry::Error;
use registry::models::{ModelFilter, ModelPatch};
use registry::names::{ModelName, Task};

use crate::helpers::{actor, all_pages, each_database, model, ready, set_alias, tagged_model, tenant};

#[tokio::test]
async fn model_names_are_unique_in_a_tenant_and_private_to_it() {
    for db in each_database("model names").await {
        let (r, backend) = (&db.registry, db.backend);
        let (acme, other) = (tenant(r, "acme").await, tenant(r, "other").await);
        let name = ModelName::parse("minilm").expect("name");
        model(r, &acme, "minilm").await;
        let again = r.create_model(&actor(), &acme.id, &name, Task::Embedding, "", &[]).await;
        assert!(matches!(again, Err(Error::Conflict(_))), "{backend}: {again:?}");
        let theirs = r.model(&other.id, &name).await;
        assert!(matches!(theirs, Err(Error::NotFound { .. })), "{backend}: acme's model is not other's");
        model(r, &other, "minilm").await;
        assert_ne!(
            r.model(&acme.id, &name).await.expect("acme's").id,
            r.model(&other.id, &name).await.expect("other's").id
        );
    }
}

#[tokio::test]
async fn models_filter_by_task_tag_and_prefix_and_page_by_name() {
    for db in each_database("model filters").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        for (name, tags) in
            [("bert-b", &["nlp"][..]), ("bert-a", &["nlp", "small"]), ("lstm", &["small"]), ("other", &[])]
        {
            tagged_model(r, &acme, name, tags).await;
        }
        let embedder = ModelName::parse("embedder").expect("name");
        r.create_model(&actor(), &acme.id, &embedder, Task::Embedding, "", &[]).await.expect("model");
        let tenant_id = acme.id.as_str();
        let names = |filter: ModelFilter| async move {
            all_pages(2, |page| {
                let filter = filter.clone();
                async move { r.list_models(tenant_id, &filter, &page).await }
            })
            .await
            .iter()
            .map(|m| m.name.to_string())
            .collect::<Vec<_>>()
        };
        assert_eq!(names(ModelFilter::default()).await, ["bert-a", "bert-b", "embedder", "lstm", "other"], "{backend}");
        let tag = ModelFilter { tag: Some("small".into()), ..Default::default() };
        assert_eq!(names(tag).await, ["bert-a", "lstm"], "{backend}");
        let prefix = ModelFilter { name_prefix: Some("bert".into()), ..Default::default() };
        assert_eq!(names(prefix).await, ["bert-a", "bert-b"], "{backend}");
        let task = ModelFilter { task: Some(Task::Embedding), ..Default::default() };
        assert_eq!(names(task).await, ["embedder"], "{backend}");
        let bert_a = r.model(&acme.id, &ModelName::parse("bert-a").expect("name")).await.expect("model");
        assert_eq!(bert_a.tags, ["nlp", "small"], "{backend}: tags read back sorted");
    }
}

#[tokio::test]
async fn a_model_update_changes_description_and_tags_only() {
    for db in each_database("model updates").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = tagged_model(r, &acme, "minilm", &["old"]).await;
        let patch = ModelPatch {
            description: Some("sentence embeddings".into()),
            tags: Some(vec!["b".into(), "a".into(), "b".into()]),
        };
        r.update_model(&actor(), &m, patch).await.expect("updating");
        let stored = r.model(&acme.id, &m.name).await.expect("model");
        assert_eq!(
            (stored.description.as_str(), stored.tags.clone()),
            ("sentence embeddings", vec!["a".into(), "b".into()])
        );
        assert_eq!((stored.task, stored.created_at), (m.task, m.created_at), "{backend}");
        let too_many = ModelPatch { tags: Some((0..33).map(|i| format!("t{i}")).collect()), ..Default::default() };
        let refused = r.update_model(&actor(), &stored, too_many).await;
        assert!(matches!(refused, Err(Error::Invalid(_))), "{backend}: {refused:?}");
    }
}

#[tokio::test]
async fn deleting_a_model_waits_for_its_aliases_then_frees_the_name() {
    for db in each_database("model deletion").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = model(r, &acme, "minilm").await;
        let number = ready(r, &m).await.number;
        set_alias(r, &m, "production", number).await;
        let refused = r.delete_model(&actor(), &m).await;
        assert!(matches!(&refused, Err(Error::Conflict(msg)) if msg.contains("production")), "{backend}: {refused:?}");
        r.delete_alias(&actor(), &m, &crate::helpers::alias("production")).await.expect("deleting the alias");
        r.delete_model(&actor(), &m).await.expect("deleting the model");
        let gone = r.model(&acme.id, &m.name).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })), "{backend}: {gone:?}");
        let again = model(r, &acme, "minilm").await;
        assert_ne!(again.id, m.id, "{backend}: the name is free for a new model");
        let counts = r.counts(Some(&acme.id)).await.expect("counts");
        assert_eq!((counts.models, counts.ready_versions, counts.versions), (2, 0, 1), "{backend}: archived, kept");
    }
}
