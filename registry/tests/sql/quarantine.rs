//! Quarantine (strikes against a version), signed-out dashboard sessions and the audit log.

use registry::Error;
use registry::audit::AuditFilter;
use registry::names::Role;
use registry::page::PageRequest;

use crate::helpers::{actor, each_database, key, model, ready, tenant};

#[tokio::test]
async fn two_strikes_quarantine_a_version_until_an_admin_clears_it() {
    for db in each_database("quarantine").await {
        let (r, backend) = (&db.registry, db.backend);
        let acme = tenant(r, "acme").await;
        let m = model(r, &acme, "clf").await;
        let v = ready(r, &m).await;
        let first = r.strike(&v.id, 1, "runner crashed").await.expect("strike");
        assert!(!first.quarantined && first.strikes == 1, "{backend}: {first:?}");
        assert!(r.quarantine(&v.id).await.expect("asking").is_none(), "{backend}");
        let second = r.strike(&v.id, 1, "runner crashed again").await.expect("strike");
        assert!(second.quarantined && second.newly, "{backend}: {second:?}");
        let third = r.strike(&v.id, 1, "and again").await.expect("strike");
        assert!(third.quarantined && !third.newly, "{backend}: {third:?}");
        let held = r.quarantine(&v.id).await.expect("asking").expect("quarantined");
        assert_eq!((held.reason.as_str(), held.strikes), ("runner crashed again", 2), "{backend}");
        let cleared = r.clear_quarantine(&actor(), &v.id).await.expect("clearing");
        assert_eq!(cleared, held, "{backend}");
        assert!(r.quarantine(&v.id).await.expect("asking").is_none(), "{backend}");
        let again = r.clear_quarantine(&actor(), &v.id).await;
        assert!(matches!(again, Err(Error::NotFound { .. })), "{backend}: {again:?}");
        let after = r.strike(&v.id, 1, "once more").await.expect("strike");
        assert_eq!(after.strikes, 1, "{backend}: clearing forgets the strikes");
    }
}

#[tokio::test]
async fn a_signed_out_session_stays_signed_out_until_its_tokens_expire() {
    for db in each_database("sessions").await {
        let (r, backend) = (&db.registry, db.backend);
        let now = registry::db::now_ms();
        r.revoke_session("sid-live", now + 3_600_000).await.expect("signing out");
        assert!(r.session_revoked("sid-live").await.expect("asking"), "{backend}");
        assert!(!r.session_revoked("sid-other").await.expect("asking"), "{backend}");
        r.revoke_session("sid-live", now + 7_200_000).await.expect("signing out twice");
        assert!(r.session_revoked("sid-live").await.expect("asking"), "{backend}");
        // A row past its tokens' expiry is dropped: nothing can present them any more.
        r.revoke_session("sid-old", now - 1).await.expect("signing out");
        assert!(!r.session_revoked("sid-old").await.expect("asking"), "{backend}");
    }
}

#[tokio::test]
async fn each_change_is_audited_with_its_actor_and_filters_narrow_the_log() {
    for db in each_database("audit").await {
        let (r, backend) = (&db.registry, db.backend);
        let (acme, other) = (tenant(r, "acme").await, tenant(r, "other").await);
        let (app, _) = key(r, &acme, Role::Viewer).await;
        r.revoke_key(&actor(), &acme.id, &app.id).await.expect("revoking");
        model(r, &other, "clf").await;
        let page = PageRequest::first(100);
        let filter = AuditFilter { tenant_id: Some(acme.id.clone()), ..Default::default() };
        let acme_log = r.audit_entries(&filter, &page).await.expect("log").data;
        let actions: Vec<&str> = acme_log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["key.revoke", "key.create", "tenant.create"], "{backend}: newest first");
        assert!(acme_log.iter().all(|e| e.actor == "test-key" && e.source_ip.as_deref() == Some("127.0.0.1")));
        assert!(acme_log.iter().all(|e| e.tenant.as_deref() == Some("acme")), "{backend}");
        let revoke = &acme_log[0];
        assert!(revoke.before.as_ref().is_some_and(|b| b["revoked_at"].is_null()), "{backend}");
        assert!(revoke.after.as_ref().is_some_and(|a| a["revoked_at"].is_string()), "{backend}");
        let keys = AuditFilter { action: Some("key.*".into()), ..Default::default() };
        assert_eq!(r.audit_entries(&keys, &page).await.expect("log").data.len(), 2, "{backend}");
        let models = AuditFilter { action: Some("model.create".into()), ..Default::default() };
        let created = r.audit_entries(&models, &page).await.expect("log").data;
        assert_eq!(created.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["model/clf"], "{backend}");
        let two = r.audit_entries(&AuditFilter::default(), &PageRequest::first(2)).await.expect("log");
        assert!(two.data.len() == 2 && two.next_cursor.is_some(), "{backend}: paged");
    }
}
