//! Tenants: unique names, suspension, quotas and what their files take.

use registry::Error;
use registry::limits::Limits;
use registry::names::TenantSlug;

use crate::helpers::{actor, all_pages, draft, each_database, model, tenant, try_upload};

#[tokio::test]
async fn a_tenant_name_is_taken_once_and_tenants_list_by_name() {
    for db in each_database("tenant names").await {
        let (r, backend) = (&db.registry, db.backend);
        for name in ["zeta", "acme", "beta"] {
            tenant(r, name).await;
        }
        let again = r.create_tenant(&actor(), &TenantSlug::parse("acme").expect("name")).await;
        assert!(matches!(again, Err(Error::Conflict(_))), "{backend}: {again:?}");
        let acme = r.tenant_by_slug(&TenantSlug::parse("acme").expect("name")).await.expect("found by name");
        assert_eq!(r.tenant_by_id(&acme.id).await.expect("found by id").name, acme.name, "{backend}");
        let names: Vec<String> = all_pages(2, |page| async move { r.list_tenants(&page).await })
            .await
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(names, ["acme", "beta", "zeta"], "{backend}");
        let missing = r.tenant_by_slug(&TenantSlug::parse("nobody").expect("name")).await;
        assert!(matches!(missing, Err(Error::NotFound { .. })), "{backend}: {missing:?}");
    }
}

#[tokio::test]
async fn suspending_twice_keeps_the_first_time_and_resuming_clears_it() {
    for db in each_database("tenant suspension").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let suspended = r.set_suspended(&actor(), &acme, true).await.expect("suspending");
        let since = suspended.suspended_at.expect("suspended");
        let stored = r.tenant_by_id(&acme.id).await.expect("reading");
        assert_eq!(stored.suspended_at, Some(since), "{backend}");
        r.set_suspended(&actor(), &stored, true).await.expect("suspending again");
        assert_eq!(r.tenant_by_id(&acme.id).await.expect("reading").suspended_at, Some(since), "{backend}");
        r.set_suspended(&actor(), &stored, false).await.expect("resuming");
        assert_eq!(r.tenant_by_id(&acme.id).await.expect("reading").suspended_at, None, "{backend}");
    }
}

#[tokio::test]
async fn storage_usage_counts_each_content_once_and_the_quota_refuses_more() {
    for db in each_database("storage quota").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let limits = Limits { requests_per_minute: Some(600), concurrent_requests: Some(4), tokens_per_minute: None };
        r.set_quotas(&actor(), &acme, Some(1000), limits).await.expect("setting quotas");
        let m = model(r, &acme, "minilm").await;
        let number = r.create_version(&actor(), &m, Default::default()).await.expect("a draft").number;
        try_upload(r, &m, number, "a.bin", vec![1; 600]).await.expect("600 bytes fit 1000");
        // The same bytes again, under another name: stored once, so they cost nothing.
        try_upload(r, &m, number, "b.bin", vec![1; 600]).await.expect("known content is free");
        let usage = r.storage_usage(&acme.id).await.expect("usage");
        assert_eq!((usage.used_bytes, usage.quota_bytes), (600, Some(1000)), "{backend}");
        assert_eq!(usage.limits, limits, "{backend}");
        let refused = try_upload(r, &m, number, "c.bin", vec![2; 600]).await;
        assert!(matches!(refused, Err(Error::QuotaExceeded(_))), "{backend}: {refused:?}");
        assert_eq!(r.storage_usage(&acme.id).await.expect("usage").used_bytes, 600, "{backend}: nothing stored");
        let bad = r.set_quotas(&actor(), &acme, Some(-1), Limits::default()).await;
        assert!(matches!(bad, Err(Error::Invalid(_))), "{backend}: {bad:?}");
        // Another tenant's usage is its own.
        let other = tenant(r, "other").await;
        draft(r, &model(r, &other, "minilm").await).await;
        assert_eq!(r.storage_usage(&acme.id).await.expect("usage").used_bytes, 600, "{backend}");
    }
}
