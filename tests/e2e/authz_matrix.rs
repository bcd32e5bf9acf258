//! Every route × every role × own or other tenant, from the gateway's route table (which
//! docs/API.md prints): allowed calls pass authorization, the rest answer 403 in the caller's
//! own tenant and 404 in another, exactly as for a tenant that does not exist.

use gateway::table::{Need, ROUTES, Rule};
use registry::names::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp, read};
use crate::tiny_bert;

#[derive(Clone, Copy, Debug)]
enum Caller {
    PlatformAdmin,
    Tenant(Role),
}

/// The request a route gets in the matrix: values that exist where reading is harmless, and
/// bodies or targets that fail after authorization where a call would change something.
fn request_for(rule: &Rule, tenant: &str) -> (String, Option<Value>) {
    let writes = rule.method != "GET" && rule.method != "HEAD";
    let mut path = rule.path.replace("{tenant}", tenant).replace("{model}", "m");
    let version = if path.contains("/files/") && writes || path.contains("/uploads") { "2" } else { "1" };
    path = path
        .replace("{version}", version)
        .replace("{path:.*}", if writes { "x.bin" } else { "config.json" })
        .replace("{id}", if path.contains("/keys/") { "zzzzzzzzzzzz" } else { "no-such-session" })
        .replace("{index}", "0")
        .replace("{alias}", if rule.method == "DELETE" { "no-such-alias" } else { "production" })
        .replace("{revision}{folder:(/.*)?}", "production")
        .replace("{revision}", "production");
    let body = (writes
        && !path.ends_with("/commit")
        && !path.ends_with("/archive")
        && !path.ends_with("/suspend")
        && !path.ends_with("/resume")
        && !path.ends_with("/auth/token")
        && !path.contains("/chunks/")
        && rule.method != "DELETE")
        .then(|| json!({"not_a_field": true}));
    (path, body)
}

enum Expect {
    Allowed,
    Forbidden,
    Hidden,
}

fn expected(need: Need, caller: Caller, own: bool) -> Expect {
    match (need, caller) {
        (Need::Public | Need::Authenticated | Need::ApiKey, _)
        | (Need::PlatformAdmin | Need::Tenant(_), Caller::PlatformAdmin) => Expect::Allowed,
        (Need::OwnTenant(_), Caller::PlatformAdmin) => Expect::Forbidden,
        (Need::AnyAdmin, Caller::PlatformAdmin) => Expect::Allowed,
        (Need::AnyAdmin, Caller::Tenant(role)) => {
            if role >= Role::Admin {
                Expect::Allowed
            } else {
                Expect::Forbidden
            }
        }
        (Need::PlatformAdmin, Caller::Tenant(_)) => {
            if own {
                Expect::Forbidden
            } else {
                Expect::Hidden
            }
        }
        (Need::Tenant(need), Caller::Tenant(role)) => match (own, role >= need) {
            (false, _) => Expect::Hidden,
            (true, true) => Expect::Allowed,
            (true, false) => Expect::Forbidden,
        },
        (Need::OwnTenant(need), Caller::Tenant(role)) => {
            if role >= need {
                Expect::Allowed
            } else {
                Expect::Forbidden
            }
        }
    }
}

async fn send(app: &TestApp, rule: &Rule, path: &str, body: Option<Value>, key: &str) -> (u16, Value) {
    let method = Method::from_bytes(rule.method.as_bytes()).expect("a method");
    let mut request = app.req(method, path, Some(key));
    if path.contains("/files/") && rule.method == "PUT" {
        request = request.header("x-checksum-sha256", "not-a-digest").body("bytes");
    } else if path.contains("/chunks/") {
        request = request.body("bytes");
    } else if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.expect("sent")).await
}

async fn fixtures(app: &TestApp, tenant: &str) -> String {
    let admin = app.tenant(tenant).await;
    let dir = app.dir.path().join(format!("tiny-{tenant}"));
    tiny_bert::write(&dir);
    app.upload_model(&admin, tenant, "m", &dir).await;
    app.set_alias(&admin, tenant, "m", "production", 1).await;
    assert_eq!(app.new_version(&admin, tenant, "m").await, 2, "a draft to upload into");
    admin
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_every_role_as_the_table_says_in_own_and_other_tenants() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = fixtures(&app, "acme").await;
    fixtures(&app, "globex").await;
    let mut callers =
        vec![(Caller::PlatformAdmin, app.admin_key.clone()), (Caller::Tenant(Role::Admin), admin.clone())];
    for role in [Role::Developer, Role::Invoker, Role::Viewer] {
        callers.push((Caller::Tenant(role), app.key("acme", role.as_str(), &admin).await));
    }
    let (mut checked, mut failures) = (0, Vec::new());
    for rule in ROUTES {
        let tenants: &[(&str, bool)] =
            if rule.path.contains("{tenant}") { &[("acme", true), ("globex", false)] } else { &[("acme", true)] };
        for (caller, key) in &callers {
            for &(tenant, own) in tenants {
                let (path, body) = request_for(rule, tenant);
                let (status, answer) = send(&app, rule, &path, body.clone(), key).await;
                checked += 1;
                let hidden_like_missing = || async {
                    let (missing_path, _) = request_for(rule, "no-such-tenant");
                    send(&app, rule, &missing_path, body.clone(), key).await.0
                };
                let ok = match expected(rule.need, *caller, own) {
                    Expect::Allowed => {
                        let tenant_hidden =
                            status == 404 && answer["error"]["message"].as_str().is_some_and(|m| m.contains("tenant"));
                        !matches!(status, 401 | 403) && status < 500 && !tenant_hidden
                    }
                    Expect::Forbidden => status == 403,
                    Expect::Hidden => status == 404 && hidden_like_missing().await == 404,
                };
                if !ok {
                    failures.push(format!("{} {path} as {caller:?}: {status} {answer}", rule.method));
                }
                if path.ends_with("/suspend") && status == 200 {
                    let resume = path.replace("/suspend", "/resume");
                    assert_eq!(app.call(Method::POST, &resume, &app.admin_key, None).await.0, 200);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} calls disagree with the route table:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 300, "{checked} calls");
    let (_, model) = app.call(Method::GET, "/api/v1/tenants/acme/models/m", &admin, None).await;
    assert_eq!(model["aliases"][0]["name"], "production", "the matrix changed nothing: {model}");
    app.stop().await;
}
