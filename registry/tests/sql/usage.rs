//! Usage metering and the request limits' windows.

use std::collections::HashMap;

use registry::usage::{GroupBy, Step, UsageCounts, UsageKey};

use crate::helpers::{each_database, tenant};

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

#[tokio::test]
async fn usage_adds_up_by_minute_hour_and_day_per_tenant() {
    for db in each_database("usage").await {
        let (r, backend) = (&db.registry, db.backend);
        let (acme, other) = (tenant(r, "acme").await, tenant(r, "other").await);
        // Midnight two days ago, so that every minute below falls in one hour and one day.
        let now = registry::db::now_ms();
        let start = now - now.rem_euclid(DAY) - 2 * DAY;
        let key = |tenant: &str, model: &str, minute: i64| UsageKey {
            tenant_id: tenant.to_owned(),
            key_id: "k1".into(),
            model: model.into(),
            version: 1,
            minute,
        };
        let mut batch = HashMap::new();
        batch.insert(key(&acme.id, "clf", start), UsageCounts::one(true, 10, 0, 5));
        batch.insert(key(&acme.id, "gen", start + MINUTE), UsageCounts::one(false, 3, 7, 700));
        batch.insert(key(&other.id, "clf", start), UsageCounts::one(true, 100, 0, 5));
        r.record_usage(&batch).await.expect("first flush");
        let mut second = HashMap::new();
        second.insert(key(&acme.id, "clf", start), UsageCounts::one(true, 20, 0, 60));
        r.record_usage(&second).await.expect("second flush adds to the same rows");

        let minutes = r.usage(Some(&acme.id), start, start + 10 * MINUTE, Step::Minute, None).await.expect("usage");
        let per_minute: Vec<(i64, i64, i64)> =
            minutes.iter().map(|p| (p.bucket - start, p.counts.requests, p.counts.input_tokens)).collect();
        assert_eq!(per_minute, [(0, 2, 30), (MINUTE, 1, 3)], "{backend}");
        let day = r.usage(Some(&acme.id), start, start + DAY, Step::Day, None).await.expect("usage");
        let total = day[0].counts;
        assert_eq!((day.len(), total.requests, total.errors, total.output_tokens), (1, 3, 1, 7), "{backend}");
        assert_eq!(total.latency_buckets, [1, 0, 1, 0, 0, 1, 0, 0], "{backend}: 5, 60 and 700 ms");
        let by_model =
            r.usage(Some(&acme.id), start, start + DAY, Step::Hour, Some(GroupBy::Model)).await.expect("usage");
        let models: Vec<(Option<&str>, i64)> =
            by_model.iter().map(|p| (p.model.as_deref(), p.counts.requests)).collect();
        assert_eq!(models, [(Some("clf"), 2), (Some("gen"), 1)], "{backend}");
        let everyone = r.usage(None, start, start + DAY, Step::Day, None).await.expect("usage");
        assert_eq!(everyone[0].counts.requests, 4, "{backend}: every tenant's");

        // Minute rows are kept two days, day rows for good.
        r.prune_usage(start + 3 * DAY).await.expect("pruning");
        assert!(r.usage(Some(&acme.id), start, start + DAY, Step::Minute, None).await.expect("usage").is_empty());
        assert_eq!(r.usage(Some(&acme.id), start, start + DAY, Step::Day, None).await.expect("usage").len(), 1);
    }
}

#[tokio::test]
async fn usage_ranges_must_run_forward_and_stay_within_10000_steps() {
    for db in each_database("usage ranges").await {
        let (r, backend) = (&db.registry, db.backend);
        assert!(r.usage(None, 10 * MINUTE, MINUTE, Step::Minute, None).await.is_err(), "{backend}: backwards");
        assert!(r.usage(None, 0, 20_000 * MINUTE, Step::Minute, None).await.is_err(), "{backend}: too many steps");
        assert!(r.usage(None, 0, 20_000 * MINUTE, Step::Day, None).await.is_ok(), "{backend}: fine by day");
    }
}

#[tokio::test]
async fn a_rate_window_never_grants_past_its_limit() {
    for db in each_database("rate windows").await {
        let (r, backend) = (&db.registry, db.backend);
        let window = 1_000 * MINUTE;
        assert_eq!(r.take_from_window("tenant:acme", window, 6, 10).await.expect("take"), 6, "{backend}");
        assert_eq!(r.take_from_window("tenant:acme", window, 6, 10).await.expect("take"), 4, "{backend}: the rest");
        assert_eq!(r.take_from_window("tenant:acme", window, 1, 10).await.expect("take"), 0, "{backend}: used up");
        assert_eq!(r.take_from_window("tenant:acme", window + MINUTE, 1, 10).await.expect("take"), 1, "{backend}");
        assert_eq!(r.take_from_window("key:k1", window, 3, 10).await.expect("take"), 3, "{backend}: its own scope");
        // Generated tokens are added whatever the limit.
        assert_eq!(r.add_to_window("tokens:acme", window, 50).await.expect("add"), 50, "{backend}");
        assert_eq!(r.add_to_window("tokens:acme", window, 25).await.expect("add"), 75, "{backend}");
        assert_eq!(r.window_used("tokens:acme", window).await.expect("used"), 75, "{backend}");
        assert_eq!(r.window_used("tokens:nobody", window).await.expect("used"), 0, "{backend}");
    }
}
