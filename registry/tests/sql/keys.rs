//! API keys: found by id, checked by hash, revoked, limited, paged.

use registry::Error;
use registry::keys::{KeyRole, key_id, secret_matches};
use registry::limits::Limits;
use registry::names::Role;

use crate::helpers::{actor, all_pages, each_database, key, tenant};

#[tokio::test]
async fn a_key_is_found_by_its_id_and_only_its_own_secret_matches() {
    for db in each_database("key lookup").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let (mine, secret) = key(r, &acme, Role::Developer).await;
        let (other, other_secret) = key(r, &acme, Role::Developer).await;
        assert_eq!(key_id(&secret), Some(mine.id.as_str()), "{backend}");
        let (found, hash) = r.key_with_secret_hash(&mine.id).await.expect("lookup").expect("the key exists");
        let expected = (KeyRole::Tenant(Role::Developer), Some(acme.id.as_str()), "app");
        assert_eq!((found.role, found.tenant_id.as_deref(), found.name.as_str()), expected, "{backend}");
        assert!(secret_matches(&secret, &hash), "{backend}");
        assert!(!secret_matches(&other_secret, &hash), "{backend}: another key's secret");
        assert_ne!(mine.id, other.id, "{backend}");
        assert!(r.key_by_id("nosuchkey000").await.expect("lookup").is_none(), "{backend}");
    }
}

#[tokio::test]
async fn keys_are_read_by_many_ids_at_once_and_unknown_ids_are_left_out() {
    for db in each_database("keys by ids").await {
        let (r, backend) = (&db.registry, db.backend);
        let (acme, other) = (tenant(r, "acme").await, tenant(r, "other").await);
        let ((a, _), (b, _)) = (key(r, &acme, Role::Viewer).await, key(r, &other, Role::Admin).await);
        let mut found: Vec<String> =
            r.keys_by_ids(&[&a.id, &b.id, "nosuchkey000"]).await.expect("lookup").into_iter().map(|k| k.id).collect();
        found.sort();
        let mut expected = vec![a.id.clone(), b.id.clone()];
        expected.sort();
        assert_eq!(found, expected, "{backend}");
        assert!(r.keys_by_ids(&[]).await.expect("nothing asked").is_empty(), "{backend}");
        let too_many = vec!["x"; 1001];
        assert!(matches!(r.keys_by_ids(&too_many).await, Err(Error::Invalid(_))), "{backend}");
    }
}

#[tokio::test]
async fn a_revoked_key_stays_revoked_and_another_tenant_cannot_revoke_it() {
    for db in each_database("key revocation").await {
        let (r, backend) = (&db.registry, db.backend);
        let (acme, other) = (tenant(r, "acme").await, tenant(r, "other").await);
        let (app, _) = key(r, &acme, Role::Invoker).await;
        let foreign = r.revoke_key(&actor(), &other.id, &app.id).await;
        assert!(matches!(foreign, Err(Error::NotFound { .. })), "{backend}: {foreign:?}");
        let revoked = r.revoke_key(&actor(), &acme.id, &app.id).await.expect("revoking");
        let at = revoked.revoked_at.expect("revoked");
        let again = r.revoke_key(&actor(), &acme.id, &app.id).await.expect("revoking again");
        assert_eq!(again.revoked_at, Some(at), "{backend}: the first time stays");
        let stored = r.key_by_id(&app.id).await.expect("lookup").expect("kept");
        assert!(!stored.is_active(registry::db::now_ms()), "{backend}");
    }
}

#[tokio::test]
async fn key_limits_are_kept_and_zero_is_refused() {
    for db in each_database("key limits").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let (app, _) = key(r, &acme, Role::Invoker).await;
        let limits = Limits { requests_per_minute: Some(5), concurrent_requests: None, tokens_per_minute: Some(1000) };
        r.set_key_limits(&actor(), &acme.id, &app.id, limits).await.expect("setting limits");
        assert_eq!(r.key_by_id(&app.id).await.expect("lookup").expect("kept").limits, limits, "{backend}");
        let zero = Limits { requests_per_minute: Some(0), ..Limits::default() };
        let refused = r.set_key_limits(&actor(), &acme.id, &app.id, zero).await;
        assert!(matches!(refused, Err(Error::Invalid(_))), "{backend}: {refused:?}");
    }
}

#[tokio::test]
async fn last_used_is_written_at_most_once_a_minute() {
    for db in each_database("key last use").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let (app, _) = key(r, &acme, Role::Viewer).await;
        let now = registry::db::now_ms();
        assert!(r.note_key_used(&app.id, now).await.expect("noting"), "{backend}: first use written");
        assert!(!r.note_key_used(&app.id, now + 1_000).await.expect("noting"), "{backend}: a second later, not");
        assert!(r.note_key_used(&app.id, now + 61_000).await.expect("noting"), "{backend}: a minute later, again");
        assert_eq!(r.key_by_id(&app.id).await.expect("lookup").expect("kept").last_used_at, Some(now + 61_000));
    }
}

#[tokio::test]
async fn platform_admin_keys_belong_to_no_tenant() {
    for db in each_database("platform admin keys").await {
        let (r, backend) = (&db.registry, db.backend);
        assert!(!r.active_platform_admin_exists().await.expect("asking"), "{backend}: a fresh database has none");
        let admin = KeyRole::PlatformAdmin;
        let (key, _) = r.create_key(&actor(), None, "root", admin, None, Limits::default()).await.expect("admin key");
        assert!(r.active_platform_admin_exists().await.expect("asking"), "{backend}");
        let acme = tenant(r, "acme").await;
        let mixed = r.create_key(&actor(), Some(&acme.id), "x", admin, None, Limits::default()).await;
        assert!(matches!(mixed, Err(Error::Invalid(_))), "{backend}: {mixed:?}");
        let orphan = r.create_key(&actor(), None, "x", KeyRole::Tenant(Role::Admin), None, Limits::default()).await;
        assert!(matches!(orphan, Err(Error::Invalid(_))), "{backend}: {orphan:?}");
        assert!(key.tenant_id.is_none(), "{backend}");
    }
}

#[tokio::test]
async fn keys_page_oldest_first_without_repeats_or_gaps() {
    for db in each_database("key pages").await {
        let (r, backend) = (&db.registry, db.backend);
        let (acme, other) = (tenant(r, "acme").await, tenant(r, "other").await);
        let role = KeyRole::Tenant(Role::Viewer);
        let mut made = Vec::new();
        for i in 0..5 {
            let name = format!("key {i}");
            made.push(
                r.create_key(&actor(), Some(&acme.id), &name, role, None, Limits::default()).await.expect("key").0,
            );
        }
        r.create_key(&actor(), Some(&other.id), "theirs", role, None, Limits::default()).await.expect("key");
        let listed = all_pages(2, |page| {
            let acme = acme.id.clone();
            async move { r.list_keys(&acme, &page).await }
        })
        .await;
        made.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let ids = |keys: &[registry::keys::ApiKey]| keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&listed), ids(&made), "{backend}: every key of acme once, oldest first");
    }
}
