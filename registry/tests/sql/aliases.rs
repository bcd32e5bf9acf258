//! Aliases: ready targets only, weighted splits, history; how references resolve.

use registry::Error;
use registry::aliases::AliasTarget;
use registry::names::ModelRef;

use crate::helpers::{actor, alias, draft, each_database, model, ready, set_alias, tenant};

#[tokio::test]
async fn a_split_alias_resolves_to_each_target_with_its_weight() {
    for db in each_database("alias splits").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = model(r, &acme, "clf").await;
        let (v1, v2) = (ready(r, &m).await.number, ready(r, &m).await.number);
        let split = [AliasTarget { version: v1, weight: 90 }, AliasTarget { version: v2, weight: 10 }];
        let set = r.set_alias(&actor(), &m, &alias("production"), &split).await.expect("splitting");
        assert_eq!((set.version, set.targets.clone()), (None, split.to_vec()), "{backend}");
        let stored = r.alias(&m, &alias("production")).await.expect("alias");
        assert_eq!(stored.targets, split, "{backend}");
        let (_, targets) =
            r.resolve_targets(&acme.id, &ModelRef::Alias(m.name.clone(), alias("production"))).await.expect("resolves");
        let weights: Vec<(i64, i64)> = targets.iter().map(|(w, v)| (*w, v.number)).collect();
        assert_eq!(weights, [(90, v1), (10, v2)], "{backend}");
        // The Git-style revision of a split alias is its largest share.
        assert_eq!(r.resolve_revision(&m, "production").await.expect("revision").number, v1, "{backend}");
    }
}

#[tokio::test]
async fn aliases_point_at_ready_versions_only_with_weights_that_sum_to_100() {
    for db in each_database("alias rules").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = model(r, &acme, "clf").await;
        let v1 = ready(r, &m).await.number;
        let v2 = draft(r, &m).await.number;
        let to_draft = r.set_alias(&actor(), &m, &alias("staging"), &[AliasTarget { version: v2, weight: 100 }]).await;
        assert!(matches!(&to_draft, Err(Error::Conflict(msg)) if msg.contains("not ready")), "{backend}: {to_draft:?}");
        let missing = r.set_alias(&actor(), &m, &alias("staging"), &[AliasTarget { version: 9, weight: 100 }]).await;
        assert!(matches!(missing, Err(Error::NotFound { .. })), "{backend}: {missing:?}");
        let bad_sum = [AliasTarget { version: v1, weight: 50 }];
        let refused = r.set_alias(&actor(), &m, &alias("staging"), &bad_sum).await;
        assert!(matches!(refused, Err(Error::Invalid(_))), "{backend}: {refused:?}");
        assert!(r.aliases(&m).await.expect("aliases").is_empty(), "{backend}: nothing was set");
    }
}

#[tokio::test]
async fn alias_history_lists_every_move_newest_first() {
    for db in each_database("alias history").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = model(r, &acme, "clf").await;
        let (v1, v2) = (ready(r, &m).await.number, ready(r, &m).await.number);
        set_alias(r, &m, "production", v1).await;
        set_alias(r, &m, "production", v2).await;
        r.delete_alias(&actor(), &m, &alias("production")).await.expect("deleting");
        let moves = r.alias_history(&m, &alias("production")).await.expect("history");
        let one = |v| Some(vec![AliasTarget { version: v, weight: 100 }]);
        let seen: Vec<_> = moves.iter().map(|mv| (mv.from.clone(), mv.to.clone())).collect();
        assert_eq!(seen, [(one(v2), None), (one(v1), one(v2)), (None, one(v1))], "{backend}");
        assert!(moves.iter().all(|mv| mv.moved_by == actor().key_id), "{backend}");
        let gone = r.alias(&m, &alias("production")).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })), "{backend}: {gone:?}");
        let never = r.alias_history(&m, &alias("never")).await;
        assert!(matches!(never, Err(Error::NotFound { .. })), "{backend}: {never:?}");
    }
}

#[tokio::test]
async fn references_resolve_to_the_newest_ready_version_a_number_or_an_alias() {
    for db in each_database("references").await {
        let (r, backend) = (&db.registry, db.backend);
        let (acme, other) = (tenant(r, "acme").await, tenant(r, "other").await);
        let m = model(r, &acme, "clf").await;
        let (v1, v2) = (ready(r, &m).await.number, ready(r, &m).await.number);
        let v3 = draft(r, &m).await.number;
        set_alias(r, &m, "stable", v1).await;
        let number = |reference: &str| {
            let (tenant, reference) = (acme.id.clone(), ModelRef::parse(reference).expect("a reference"));
            async move { r.resolve(&tenant, &reference).await.map(|(_, v)| v.number) }
        };
        assert_eq!(number("clf").await.expect("latest"), v2, "{backend}: the newest ready, not the draft");
        assert_eq!(number("clf@1").await.expect("by number"), v1, "{backend}");
        assert_eq!(number("clf:stable").await.expect("by alias"), v1, "{backend}");
        for missing in [format!("clf@{v3}"), "clf@9".into(), "clf:nope".into(), "nope".into()] {
            assert!(matches!(number(&missing).await, Err(Error::NotFound { .. })), "{backend}: {missing}");
        }
        let theirs = r.resolve(&other.id, &ModelRef::parse("clf").expect("reference")).await;
        assert!(matches!(theirs, Err(Error::NotFound { .. })), "{backend}: another tenant's model");
        assert_eq!(r.resolve_revision(&m, "main").await.expect("main").number, v2, "{backend}");
    }
}
