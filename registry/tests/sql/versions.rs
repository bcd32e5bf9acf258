//! Versions: numbered per model, drafts that commit once, archived for good.

use registry::Error;
use registry::names::ModelRef;
use registry::page::PageRequest;
use registry::versions::{NewVersion, VersionStatus};

use crate::helpers::{actor, all_pages, draft, each_database, model, ready, set_alias, tenant, upload};

#[tokio::test]
async fn versions_are_numbered_per_model_from_one() {
    for db in each_database("version numbers").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let (a, b) = (model(r, &acme, "a").await, model(r, &acme, "b").await);
        let mut numbers = Vec::new();
        for m in [&a, &a, &b, &a] {
            numbers.push(r.create_version(&actor(), m, NewVersion::default()).await.expect("draft").number);
        }
        assert_eq!(numbers, [1, 2, 1, 3], "{backend}");
    }
}

#[tokio::test]
async fn a_committed_version_is_ready_and_immutable() {
    for db in each_database("version commit").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = model(r, &acme, "clf").await;
        let v = ready(r, &m).await;
        assert_eq!((v.status, v.architecture.as_deref()), (VersionStatus::Ready, Some("lstm_classifier")), "{backend}");
        let stored = r.version(&m, v.number).await.expect("version");
        assert_eq!(stored.status, VersionStatus::Ready, "{backend}");
        assert!(stored.committed_at.is_some(), "{backend}");
        let paths: Vec<&str> = stored.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["config.json", "model.safetensors", "vocab.json"], "{backend}");
        let path = registry::names::FilePath::parse("extra.txt").expect("path");
        let file = registry::files::Upload {
            path: &path,
            declared: None,
            content_length: Some(1),
            body: futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))]),
        };
        let late = r.upload_file(&actor(), &m, v.number, file).await;
        assert!(matches!(&late, Err(Error::Conflict(msg)) if msg.contains("immutable")), "{backend}: {late:?}");
        let twice = r.commit_version(&actor(), &m, v.number, None).await;
        assert!(matches!(twice, Err(Error::Conflict(_))), "{backend}: {twice:?}");
    }
}

#[tokio::test]
async fn a_draft_that_fails_validation_stays_a_draft_with_every_problem_listed() {
    for db in each_database("version validation").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = model(r, &acme, "clf").await;
        let number = r.create_version(&actor(), &m, NewVersion::default()).await.expect("draft").number;
        upload(r, &m, number, "config.json", br#"{"model_type":"lstm_classifier"}"#.to_vec()).await;
        let refused = r.commit_version(&actor(), &m, number, None).await;
        let Err(Error::Validation(problems)) = refused else { panic!("{backend}: {refused:?}") };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|p| p.contains("no weights")), "{backend}: {text:?}");
        assert!(text.iter().any(|p| p.starts_with("config.json")), "{backend}: {text:?}");
        assert_eq!(r.version(&m, number).await.expect("version").status, VersionStatus::Draft, "{backend}");
    }
}

#[tokio::test]
async fn an_archived_version_is_not_callable_and_an_aliased_one_cannot_be_archived() {
    for db in each_database("version archive").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = model(r, &acme, "clf").await;
        let number = ready(r, &m).await.number;
        set_alias(r, &m, "production", number).await;
        let refused = r.archive_version(&actor(), &m, number).await;
        assert!(matches!(&refused, Err(Error::Conflict(msg)) if msg.contains("production")), "{backend}: {refused:?}");
        assert_eq!(r.version(&m, number).await.expect("v").status, VersionStatus::Ready, "{backend}: unchanged");
        r.delete_alias(&actor(), &m, &crate::helpers::alias("production")).await.expect("deleting the alias");
        let archived = r.archive_version(&actor(), &m, number).await.expect("archiving");
        assert!(archived.archived_at.is_some(), "{backend}");
        let twice = r.archive_version(&actor(), &m, number).await;
        assert!(matches!(twice, Err(Error::Conflict(_))), "{backend}: {twice:?}");
        for reference in [ModelRef::Latest(m.name.clone()), ModelRef::Version(m.name.clone(), number)] {
            let resolved = r.resolve(&acme.id, &reference).await;
            assert!(matches!(resolved, Err(Error::NotFound { .. })), "{backend}: {reference:?} {resolved:?}");
        }
    }
}

#[tokio::test]
async fn versions_list_by_status_and_page_by_number() {
    for db in each_database("version lists").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = model(r, &acme, "clf").await;
        ready(r, &m).await;
        draft(r, &m).await;
        ready(r, &m).await;
        let m = &m;
        let numbers = |status| async move {
            all_pages(1, |page| async move { r.list_versions(m, status, &page).await })
                .await
                .iter()
                .map(|v| v.number)
                .collect::<Vec<_>>()
        };
        assert_eq!(numbers(None).await, [1, 2, 3], "{backend}");
        assert_eq!(numbers(Some(VersionStatus::Ready)).await, [1, 3], "{backend}");
        assert_eq!(numbers(Some(VersionStatus::Draft)).await, [2], "{backend}");
        let listed = r.list_versions(m, None, &PageRequest::first(10)).await.expect("page");
        assert!(listed.data.iter().all(|v| v.files.len() == 3), "{backend}: each with its files");
        let bad = PageRequest { limit: 10, after: Some("not-a-number".into()) };
        assert!(matches!(r.list_versions(m, None, &bad).await, Err(Error::Invalid(_))), "{backend}");
    }
}

#[tokio::test]
async fn lineage_names_a_committed_version_of_the_same_tenant() {
    for db in each_database("version lineage").await {
        let (r, backend) = (&db.registry, db.backend);
        let (acme, other) = (tenant(r, "acme").await, tenant(r, "other").await);
        let base = model(r, &acme, "base").await;
        ready(r, &base).await;
        draft(r, &base).await;
        model(r, &other, "theirs").await;
        let tuned = model(r, &acme, "tuned").await;
        let new = |from: &str| NewVersion { derived_from: Some(from.into()), ..NewVersion::default() };
        let v = r.create_version(&actor(), &tuned, new("base@1")).await.expect("derived from a ready version");
        assert_eq!(v.derived_from.as_deref(), Some("base@1"), "{backend}");
        assert_eq!(r.version(&tuned, v.number).await.expect("v").derived_from.as_deref(), Some("base@1"));
        for bad in ["base@2", "base@9", "base", "theirs@1"] {
            let refused = r.create_version(&actor(), &tuned, new(bad)).await;
            assert!(matches!(refused, Err(Error::Invalid(_))), "{backend}: {bad}: {refused:?}");
        }
    }
}
