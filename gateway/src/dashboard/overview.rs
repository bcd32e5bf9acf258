//! The first page: what the registry holds, how the runners are, and the last hour's traffic.

use actix_web::{HttpResponse, get, web};
use askama::Template;

use super::charts::{Series, line_chart};
use super::usage::{Range, Timeline, latency_label, quantile, total};
use super::view::{Chrome, Session};
use super::{PageError, html};
use crate::AppState;
use crate::auth::Scope;

struct Card {
    label: &'static str,
    value: String,
    detail: String,
    href: Option<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    cards: Vec<Card>,
    traffic_chart: String,
    /// Where a principal of one tenant starts (models), or None for a platform admin.
    tenant: Option<String>,
    empty: bool,
}

/// Counts, runners and the last hour of requests, of every tenant for a platform admin and
/// of the principal's own tenant otherwise. Requires: a session.
#[get("/admin")]
async fn page(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, PageError> {
    let tenant = match &session.principal.scope {
        Scope::PlatformAdmin => None,
        Scope::Tenant { tenant, .. } => Some(tenant.clone()),
    };
    let tenant_id = tenant.as_ref().map(|t| t.id.as_str());
    let counts = state.registry.counts(tenant_id).await?;
    let timeline = Timeline::new(Range::Hour, registry::db::now_ms());
    let points =
        state.registry.usage(tenant_id, timeline.from, timeline.to, registry::usage::Step::Minute, None).await?;
    let hour = total(points.iter());
    let models_href = tenant.as_ref().map(|t| format!("/admin/tenants/{}/models", t.name));
    let mut cards = Vec::new();
    if tenant.is_none() {
        cards.push(Card {
            label: "Tenants",
            value: counts.tenants.to_string(),
            detail: String::new(),
            href: Some("/admin/tenants".into()),
        });
    }
    cards.push(Card { label: "Models", value: counts.models.to_string(), detail: String::new(), href: models_href });
    cards.push(Card {
        label: "Versions",
        value: counts.versions.to_string(),
        detail: format!("{} ready", counts.ready_versions),
        href: None,
    });
    if tenant.is_none() {
        let runners = state.runners.statuses().await;
        let up = runners.iter().filter(|r| r.status.is_ok() && !r.circuit_open).count();
        let loaded: usize = runners.iter().filter_map(|r| r.status.as_ref().ok()).map(|s| s.loaded.len()).sum();
        cards.push(Card {
            label: "Runners",
            value: format!("{up} / {}", runners.len()),
            detail: format!("healthy · {loaded} models loaded"),
            href: Some("/admin/runners".into()),
        });
    }
    cards.push(Card {
        label: "Requests, last hour",
        value: hour.requests.to_string(),
        detail: format!("{} errors", hour.errors),
        href: None,
    });
    cards.push(Card {
        label: "Latency, last hour",
        value: latency_label(quantile(&hour.latency_buckets, 0.5)),
        detail: format!("p50 · p99 {}", latency_label(quantile(&hour.latency_buckets, 0.99))),
        href: None,
    });
    let series = [
        Series { name: "requests".into(), values: timeline.series(points.iter(), |c| c.requests as f64) },
        Series { name: "errors".into(), values: timeline.series(points.iter(), |c| c.errors as f64) },
    ];
    let view = OverviewPage {
        chrome: session.chrome("overview"),
        traffic_chart: line_chart("Requests and errors per minute, last hour", &series, &timeline.labels, ""),
        cards,
        tenant: tenant.map(|t| t.name.to_string()),
        empty: counts.models == 0,
    };
    html(&view)
}
