//! What every page shows around its content, and how values are written on pages.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use registry::names::Role;

use super::PageError;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;

/// The signed-in principal of a dashboard request and its session's CSRF token; put on the
/// request by the gate (`session::admit`).
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub principal: Principal,
    pub csrf: String,
}

impl FromRequest for Session {
    type Error = PageError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Session>()
                .cloned()
                .ok_or_else(|| ApiError::unauthorized("sign in to the dashboard first").into()),
        )
    }
}

/// The layout's data: who is signed in, what the navigation offers, the form token.
pub(crate) struct Chrome {
    /// `platform admin` or `acme · admin`.
    pub who: String,
    pub key_id: String,
    pub platform_admin: bool,
    /// The signed-in principal's own tenant.
    pub tenant: Option<String>,
    /// Whether the principal administers its tenant (keys, usage, audit).
    pub tenant_admin: bool,
    /// Which navigation entry is current.
    pub section: &'static str,
    pub csrf: String,
}

impl Session {
    pub fn chrome(&self, section: &'static str) -> Chrome {
        let (who, platform_admin, tenant, tenant_admin) = match &self.principal.scope {
            Scope::PlatformAdmin => ("platform admin".to_owned(), true, None, false),
            Scope::Tenant { tenant, role } => (
                format!("{} · {}", tenant.name.as_str(), role.as_str()),
                false,
                Some(tenant.name.to_string()),
                *role >= Role::Admin,
            ),
        };
        Chrome {
            who,
            key_id: self.principal.key_id.clone(),
            platform_admin,
            tenant,
            tenant_admin,
            section,
            csrf: self.csrf.clone(),
        }
    }

    /// Whether the principal may act with `need` in its tenant (platform admins everywhere).
    pub fn can(&self, need: Role) -> bool {
        match &self.principal.scope {
            Scope::PlatformAdmin => true,
            Scope::Tenant { role, .. } => *role >= need,
        }
    }
}

/// A time (ms since the epoch) as `2026-11-27 10:03:05 UTC`.
pub(crate) fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC")).ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

pub(crate) fn when_opt(ms: Option<i64>) -> String {
    ms.map(when).unwrap_or_default()
}

/// A size in bytes, the way people read it (`90.9 MB`).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Text made safe inside HTML or SVG markup we write ourselves (templates escape on their own).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text as one component of a URL's query (RFC 3986 unreserved characters pass as they are).
pub(crate) fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_for_people() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(when(1_795_000_000_123), "2026-11-18 11:06:40 UTC");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(90_868_376), "90.9 MB");
        assert_eq!(url_encode("/admin?a=b c"), "%2Fadmin%3Fa%3Db%20c");
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
