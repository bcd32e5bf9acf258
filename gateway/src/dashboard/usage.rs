//! A tenant's usage over time: requests, errors, tokens and latency, per model, version or
//! key, over the last hour, day or week.

use std::collections::HashMap;

use actix_web::{HttpResponse, get, web};
use askama::Template;
use registry::names::Role;
use registry::usage::{GroupBy, LATENCY_BOUNDS_MS, Step, UsageCounts, UsagePoint};
use serde::Deserialize;

use super::charts::{Series, line_chart};
use super::view::{Chrome, Session};
use super::{PageError, html};
use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// The span a page shows, in steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Range {
    Hour,
    Day,
    Week,
}

impl Range {
    fn parse(raw: &str) -> Result<Self, ApiError> {
        match raw {
            "hour" => Ok(Range::Hour),
            "day" => Ok(Range::Day),
            "week" => Ok(Range::Week),
            _ => Err(ApiError::new(ErrorCode::InvalidQuery, "range must be hour, day or week")),
        }
    }

    fn step(self) -> Step {
        match self {
            Range::Hour => Step::Minute,
            Range::Day | Range::Week => Step::Hour,
        }
    }

    fn steps(self) -> usize {
        match self {
            Range::Hour => 60,
            Range::Day => 24,
            Range::Week => 168,
        }
    }
}

/// The buckets of a range ending now, oldest first.
pub(super) struct Timeline {
    pub from: i64,
    pub to: i64,
    step_ms: i64,
    pub labels: Vec<String>,
}

impl Timeline {
    pub fn new(range: Range, now_ms: i64) -> Self {
        let step_ms = range.step().millis();
        let last = now_ms - now_ms.rem_euclid(step_ms);
        let steps = range.steps() as i64;
        let from = last - (steps - 1) * step_ms;
        let format = match range {
            Range::Hour | Range::Day => time::macros::format_description!("[hour]:[minute]"),
            Range::Week => time::macros::format_description!("[month]-[day] [hour]:00"),
        };
        let labels = (0..steps)
            .map(|i| {
                time::OffsetDateTime::from_unix_timestamp((from + i * step_ms) / 1000)
                    .ok()
                    .and_then(|t| t.format(format).ok())
                    .unwrap_or_default()
            })
            .collect();
        Self { from, to: now_ms + 1, step_ms, labels }
    }

    fn index(&self, bucket: i64) -> Option<usize> {
        let i = usize::try_from((bucket - self.from).div_euclid(self.step_ms)).ok()?;
        (i < self.labels.len()).then_some(i)
    }

    /// One value per bucket from the points (buckets with none are zero).
    pub fn series<'a>(
        &self,
        points: impl Iterator<Item = &'a UsagePoint>,
        value: impl Fn(&UsageCounts) -> f64,
    ) -> Vec<f64> {
        let mut values = vec![0.0; self.labels.len()];
        for p in points {
            if let Some(i) = self.index(p.bucket) {
                values[i] += value(&p.counts);
            }
        }
        values
    }
}

/// The latency under which a fraction `q` of the requests finished, as the upper bound of
/// its histogram bucket (ms); `i64::MAX` past the last bound; None without requests.
pub(super) fn quantile(buckets: &[i64; 8], q: f64) -> Option<i64> {
    let total: i64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(i64::MAX));
        }
    }
    Some(i64::MAX)
}

pub(super) fn latency_label(ms: Option<i64>) -> String {
    match ms {
        None => "–".into(),
        Some(i64::MAX) => format!("> {} s", LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1] / 1000),
        Some(ms) => format!("≤ {ms} ms"),
    }
}

/// Every point's counts added up.
pub(super) fn total<'a>(points: impl Iterator<Item = &'a UsagePoint>) -> UsageCounts {
    let mut sum = UsageCounts::default();
    for p in points {
        sum.add(&p.counts);
    }
    sum
}

struct Row {
    name: String,
    requests: i64,
    errors: i64,
    error_rate: String,
    input_tokens: i64,
    output_tokens: i64,
    mean: String,
    p50: String,
    p99: String,
}

impl Row {
    fn new(name: String, c: &UsageCounts) -> Self {
        let share = |part: i64| {
            if c.requests == 0 { "–".to_owned() } else { format!("{:.1} %", 100.0 * part as f64 / c.requests as f64) }
        };
        Row {
            name,
            requests: c.requests,
            errors: c.errors,
            error_rate: share(c.errors),
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            mean: if c.requests == 0 { "–".into() } else { format!("{} ms", c.latency_ms_sum / c.requests) },
            p50: latency_label(quantile(&c.latency_buckets, 0.5)),
            p99: latency_label(quantile(&c.latency_buckets, 0.99)),
        }
    }
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    chrome: Chrome,
    tenant: String,
    range: &'static str,
    by: &'static str,
    requests_chart: String,
    errors_chart: String,
    tokens_chart: String,
    latency_chart: String,
    rows: Vec<Row>,
    total: Row,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    range: Option<String>,
    by: Option<String>,
}

/// At most this many groups get a line of their own; the rest share one.
const MAX_LINES: usize = 6;

/// The tenant's usage. Requires: tenant admin.
#[get("/admin/tenants/{tenant}/usage")]
async fn page(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, PageError> {
    let tenant = session.principal.tenant(&state.registry, &path, Role::Admin).await?;
    let range = Range::parse(query.range.as_deref().unwrap_or("day"))?;
    let (by, group_by) = match query.by.as_deref().unwrap_or("model") {
        "model" => ("model", Some(GroupBy::Model)),
        "version" => ("version", Some(GroupBy::Version)),
        "key" => ("key", Some(GroupBy::Key)),
        "none" => ("none", None),
        _ => return Err(ApiError::new(ErrorCode::InvalidQuery, "by must be model, version, key or none").into()),
    };
    let timeline = Timeline::new(range, registry::db::now_ms());
    let points = state.registry.usage(Some(&tenant.id), timeline.from, timeline.to, range.step(), group_by).await?;
    let key_names: HashMap<String, String> = if group_by == Some(GroupBy::Key) {
        let keys = state.registry.list_keys(&tenant.id, &registry::page::PageRequest::first(1000)).await?;
        keys.data.into_iter().map(|k| (k.id.clone(), format!("{} ({})", k.name, k.prefix))).collect()
    } else {
        HashMap::new()
    };
    let group_of = |p: &UsagePoint| match (group_by, &p.model, p.version, &p.key_id) {
        (Some(GroupBy::Version), Some(m), Some(v), _) => format!("{m}@{v}"),
        (Some(GroupBy::Model), Some(m), ..) => m.clone(),
        (Some(GroupBy::Key), _, _, Some(k)) => key_names.get(k).cloned().unwrap_or_else(|| k.clone()),
        _ => "all requests".into(),
    };
    let mut groups: Vec<(String, Vec<&UsagePoint>)> = Vec::new();
    for p in &points {
        let name = group_of(p);
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, members)) => members.push(p),
            None => groups.push((name, vec![p])),
        }
    }
    groups.sort_by_key(|(_, members)| std::cmp::Reverse(total(members.iter().copied()).requests));
    let mut lines: Vec<Series> = groups
        .iter()
        .take(MAX_LINES)
        .map(|(name, members)| Series {
            name: name.clone(),
            values: timeline.series(members.iter().copied(), |c| c.requests as f64),
        })
        .collect();
    if groups.len() > MAX_LINES {
        let rest = groups[MAX_LINES..].iter().flat_map(|(_, m)| m.iter().copied());
        lines.push(Series { name: "others".into(), values: timeline.series(rest, |c| c.requests as f64) });
    }
    let all = || points.iter();
    let requests_chart = line_chart("Requests per step", &lines, &timeline.labels, "");
    let errors_chart = line_chart(
        "Errors per step",
        &[Series { name: "errors".into(), values: timeline.series(all(), |c| c.errors as f64) }],
        &timeline.labels,
        "",
    );
    let tokens_chart = line_chart(
        "Tokens per step",
        &[
            Series { name: "input tokens".into(), values: timeline.series(all(), |c| c.input_tokens as f64) },
            Series { name: "output tokens".into(), values: timeline.series(all(), |c| c.output_tokens as f64) },
        ],
        &timeline.labels,
        "",
    );
    let latency_chart = latency_chart(&timeline, &points);
    let rows = groups.iter().map(|(name, members)| Row::new(name.clone(), &total(members.iter().copied()))).collect();
    let view = UsagePage {
        chrome: session.chrome("usage"),
        tenant: tenant.name.to_string(),
        range: match range {
            Range::Hour => "hour",
            Range::Day => "day",
            Range::Week => "week",
        },
        by,
        requests_chart,
        errors_chart,
        tokens_chart,
        latency_chart,
        rows,
        total: Row::new("all".into(), &total(all())),
    };
    html(&view)
}

/// p50 and p99 latency per step (the upper bound of the histogram bucket they fall in).
fn latency_chart(timeline: &Timeline, points: &[UsagePoint]) -> String {
    let mut per_step = vec![[0i64; 8]; timeline.labels.len()];
    for p in points {
        if let Some(i) = timeline.index(p.bucket) {
            for (slot, n) in per_step[i].iter_mut().zip(p.counts.latency_buckets) {
                *slot += n;
            }
        }
    }
    let line = |q: f64| -> Vec<f64> {
        per_step
            .iter()
            .map(|b| match quantile(b, q) {
                Some(i64::MAX) => (LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1] * 2) as f64,
                Some(ms) => ms as f64,
                None => 0.0,
            })
            .collect()
    };
    let series = [Series { name: "p50".into(), values: line(0.5) }, Series { name: "p99".into(), values: line(0.99) }];
    line_chart("Latency per step (upper bound of the bucket)", &series, &timeline.labels, "ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_histogram() {
        assert_eq!(quantile(&[0; 8], 0.5), None);
        // 10 requests: 5 under 10 ms, 4 under 50 ms, 1 over 5 s.
        let buckets = [5, 4, 0, 0, 0, 0, 0, 1];
        assert_eq!(quantile(&buckets, 0.5), Some(10));
        assert_eq!(quantile(&buckets, 0.9), Some(50));
        assert_eq!(quantile(&buckets, 0.99), Some(i64::MAX));
        assert_eq!(latency_label(Some(i64::MAX)), "> 5 s");
        assert_eq!(latency_label(Some(50)), "≤ 50 ms");
    }

    #[test]
    fn a_timeline_ends_with_the_current_step() {
        let now = 1_795_000_000_000 + 30_000;
        let t = Timeline::new(Range::Hour, now);
        assert_eq!(t.labels.len(), 60);
        assert_eq!(t.index(now - now % 60_000), Some(59));
        assert_eq!(t.index(t.from), Some(0));
        assert_eq!(t.index(t.from - 60_000), None);
    }
}
