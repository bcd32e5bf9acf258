//! The admin dashboard in headless Chromium: a platform admin signs in, creates a tenant and
//! its keys, uploads a tiny model through the page and commits it, moves `production` to it,
//! sees it loaded on a runner after a call, sees the call in the usage chart and every
//! change in the audit log; the other tenant's admin finds none of it; forms without the
//! session's token are refused. Every page is saved under `target/screenshots/`. Without a
//! browser: pages name the keys that acted (their ids on hover) and the runner's device.

use std::path::Path;

use reqwest::Method;
use serde_json::json;
use sha2::Digest as _;

use crate::browser::Browser;
use crate::helpers::{AppOptions, Database, TestApp, files_of};
use crate::tiny_bert;

/// Every visible form field has a label (an accessible name), and the page is no wider than
/// the window.
async fn check_layout(b: &Browser, page: &str) {
    let unlabelled = b
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), select')]
               .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
               .map(e => e.name);",
        )
        .await;
    assert_eq!(unlabelled, json!([]), "fields without a label on {page}");
    let fits = b.execute("return document.documentElement.scrollWidth <= window.innerWidth + 1;").await;
    assert_eq!(fits, json!(true), "{page} is wider than the window");
}

async fn visit(b: &Browser, url: &str, ready: &str, name: &str) {
    b.goto(url).await;
    b.find(ready).await;
    check_layout(b, name).await;
    b.screenshot(name).await;
}

async fn sign_in(b: &Browser, base: &str, key: &str) {
    b.goto(&format!("{base}/admin/login")).await;
    b.fill("#key", key).await;
    b.click("form[action='/admin/login'] button").await;
    b.find("main h1").await;
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("a model file")))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_runs_a_tenant_from_sign_in_to_usage_in_a_real_browser() {
    let Some(b) = Browser::start("the dashboard's browser tests").await else { return };
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let base = app.base.as_str();

    // A page asks for a key first, and comes back to itself after.
    b.goto(&format!("{base}/admin/tenants")).await;
    b.find("#key").await;
    assert!(b.url().await.contains("/admin/login?next=%2Fadmin%2Ftenants"), "{}", b.url().await);
    check_layout(&b, "login").await;
    b.screenshot("login").await;
    b.fill("#key", "mg_notakey_0000").await;
    b.click("form[action='/admin/login'] button").await;
    b.wait_text("#login-error", "invalid").await;
    b.fill("#key", &app.admin_key).await;
    b.click("form[action='/admin/login'] button").await;
    b.wait_text("main h1", "Tenants").await;

    // A tenant, its quotas, its keys.
    b.fill("#tenant-name", "globex").await;
    b.click("form[action='/admin/tenants'] button").await;
    b.wait_text("main h1", "Tenant globex").await;
    b.fill("#q-rpm", "600").await;
    b.click("form[action$='/quotas'] button").await;
    b.wait_text("dl.facts", "600").await;
    check_layout(&b, "tenant").await;
    b.screenshot("tenant").await;
    visit(&b, &format!("{base}/admin/tenants"), "main table", "tenants").await;

    visit(&b, &format!("{base}/admin/tenants/globex/keys"), "#key-name", "keys-empty").await;
    b.fill("#key-name", "ops").await;
    b.click("#key-role option[value=admin]").await;
    b.click("form[action$='/keys'] button").await;
    let globex_admin = b.wait_text("#new-secret", "mg_").await;
    b.screenshot("keys-created").await;
    b.fill("#key-name", "checkout").await;
    b.click("#key-role option[value=invoker]").await;
    b.click("form[action$='/keys'] button").await;
    let invoker = b.wait_new_text("#new-secret", "mg_", Some(&globex_admin)).await;
    let (status, _) = app.call(Method::GET, "/api/v1/tenants/globex/keys", &globex_admin, None).await;
    assert_eq!(status, 200, "the secret the page showed is a working admin key");

    // A model, and a version uploaded through the page.
    visit(&b, &format!("{base}/admin/tenants/globex/models"), "#model-name", "models-empty").await;
    b.fill("#model-name", "tiny").await;
    b.click("form[action$='/models'] button").await;
    b.wait_text("main h1", "globex/tiny").await;
    check_layout(&b, "model-empty").await;
    b.screenshot("model-empty").await;

    // First a broken one: its problem is shown beside the file.
    let dir = app.dir.path().join("tiny");
    tiny_bert::write(&dir);
    let broken = app.dir.path().join("broken");
    std::fs::create_dir_all(&broken).expect("folder");
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(dir.join(file), broken.join(file)).expect("copy");
    }
    std::fs::write(broken.join("model.safetensors"), b"these are not weights").expect("write");
    let paths = |d: &Path| files_of(d).iter().map(|(_, p)| p.display().to_string()).collect::<Vec<_>>().join("\n");
    b.fill("#upload-files", &paths(&broken)).await;
    b.click("form[data-upload] button").await;
    b.wait_text("#version-status", "draft").await;
    b.click("#commit").await;
    let problem = b.wait_text("tr.problem", "model.safetensors").await;
    assert!(problem.lines().count() > 1, "the problem is written under the file: {problem:?}");
    assert_eq!(b.text("#version-status").await, "draft", "a failed commit leaves the draft a draft");
    b.screenshot("version-problem").await;

    // The model has a subfolder (1_Pooling/), so it goes up as a folder.
    b.goto(&format!("{base}/admin/tenants/globex/models/tiny")).await;
    b.fill("#upload-folder", &dir.display().to_string()).await;
    b.click("form[data-upload] button").await;
    b.wait_text("main h1", "v2").await;
    let files = b.text("#files").await;
    for (name, path) in files_of(&dir) {
        assert!(files.contains(&name), "{name} is listed: {files}");
        let digest = sha256_hex(&path);
        let shown = b.attribute(&format!("#files code[title='{digest}']"), "title").await;
        assert_eq!(shown.as_deref(), Some(digest.as_str()), "{name}'s sha256 is shown");
    }
    b.click("#commit").await;
    b.wait_text("#version-status", "ready").await;
    let admin_id = app.admin_key.split('_').nth(1).expect("key id");
    assert_eq!(b.text("#uploader").await, "bootstrap admin", "the uploader's key by name");
    assert_eq!(b.attribute("#uploader", "title").await.as_deref(), Some(admin_id), "its id on hover");
    check_layout(&b, "version").await;
    b.screenshot("version").await;

    // production -> v2, after a confirmation; the history shows the move.
    b.goto(&format!("{base}/admin/tenants/globex/models/tiny")).await;
    b.find("#alias-version").await;
    b.click("form[action$='/aliases/move'] button").await;
    b.wait_text("#alias-to", "v2").await;
    assert_eq!(b.text("#alias-from").await, "nothing (a new alias)");
    check_layout(&b, "alias-confirm").await;
    b.screenshot("alias-confirm").await;
    b.click("#confirm-move").await;
    b.wait_text("#alias-history", "production").await;
    assert!(b.text("#aliases table").await.contains("production v2"));
    assert!(b.text("#alias-history").await.contains("bootstrap admin"), "{}", b.text("#alias-history").await);
    b.screenshot("model").await;

    // A call loads it on a runner.
    let (status, body) = app.embed(&invoker, "tiny:production", json!("hello from the dashboard test")).await;
    assert_eq!(status, 200, "{body}");
    visit(&b, &format!("{base}/admin/runners"), ".runner", "runners").await;
    b.wait_text("#runners", "globex/tiny@2").await;
    assert!(b.text("#runners dl.facts").await.contains("CPU"), "{}", b.text("#runners dl.facts").await);
    assert!(!b.find_all("#runners meter").await.is_empty(), "memory is shown against the budget");
    b.click("#runners form[action='/admin/runners/pin'] button").await;
    b.wait_text("#runners", "pinned").await;
    b.screenshot("runners-pinned").await;
    b.click("#runners form[action='/admin/runners/pin'] button").await;
    b.click("#runners form[action='/admin/runners/unload'] button").await;
    b.wait_text("#runners", "No model loaded").await;

    // The call is in the usage chart (once usage is flushed), and every change in the audit log.
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    visit(&b, &format!("{base}/admin/tenants/globex/usage?range=hour&by=model"), "#chart-requests svg", "usage").await;
    let total = b.attribute("#chart-requests polyline[data-series='tiny']", "data-total").await;
    assert_eq!(total.as_deref(), Some("1"), "the one call is in the chart");
    assert!(b.text("#usage-table").await.contains("tiny 1 0"), "{}", b.text("#usage-table").await);
    visit(&b, &format!("{base}/admin/audit?tenant=globex"), "#audit", "audit").await;
    let audit = b.text("#audit").await;
    for action in ["tenant.quota.set", "key.create", "model.create", "version.commit", "alias.set"] {
        assert!(audit.contains(action), "{action} is in the audit log: {audit}");
    }
    visit(&b, &format!("{base}/admin"), ".cards", "overview").await;
    assert!(b.text(".cards").await.contains("Requests, last hour\n1"), "{}", b.text(".cards").await);

    // On a phone.
    b.resize(390, 844).await;
    visit(&b, &format!("{base}/admin/tenants/globex/models/tiny"), "#versions", "model-phone").await;
    visit(&b, &format!("{base}/admin/tenants/globex/usage?range=hour"), "#chart-requests", "usage-phone").await;
    b.resize(1280, 900).await;

    // A form posted without the session's token, or from another site, changes nothing.
    let cookie = b.cookie(gateway::dashboard::COOKIE).await.expect("the session cookie");
    let keys_before = app.call(Method::GET, "/api/v1/tenants/globex/keys", &app.admin_key, None).await.1;
    let post = |body: String, origin: Option<&str>| {
        let mut request = app
            .client
            .post(format!("{base}/admin/tenants/globex/keys"))
            .header("cookie", format!("{}={cookie}", gateway::dashboard::COOKIE))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let refused = post("name=sneaky&role=admin&expires_in_days=".into(), None).await.expect("answer");
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.expect("page").contains("CSRF"));
    let csrf = b.attribute("input[name=csrf]", "value").await.expect("the page's token");
    let cross = post(format!("name=sneaky&role=admin&expires_in_days=&csrf={csrf}"), Some("https://evil.example"));
    assert_eq!(cross.await.expect("answer").status(), 403);
    let keys_after = app.call(Method::GET, "/api/v1/tenants/globex/keys", &app.admin_key, None).await.1;
    assert_eq!(keys_before, keys_after, "no key was made");
    let allowed = post(format!("name=proper&role=viewer&expires_in_days=&csrf={csrf}"), Some(base)).await;
    assert_eq!(allowed.expect("answer").status(), 200, "the same post with the token works");
    b.goto(&format!("{base}/admin/tenants/globex/keys")).await;
    b.click("button[aria-label='Revoke key proper']").await;
    b.wait_text("#keys", "revoked").await;

    // Sign out; sign in as another tenant's admin: none of globex is there.
    b.click("form[action='/admin/logout'] button").await;
    b.wait_text("main", "signed out").await;
    let initech_admin = app.tenant("initech").await;
    sign_in(&b, base, &initech_admin).await;
    let overview = b.source().await;
    assert!(!overview.contains("globex"), "the overview names no other tenant");
    assert!(b.text(".cards").await.contains("Models\n0"));
    for page in ["/admin/tenants/globex", "/admin/tenants/globex/models/tiny", "/admin/tenants/globex/usage"] {
        b.goto(&format!("{base}{page}")).await;
        b.wait_text("main h1", "404").await;
    }
    b.screenshot("other-tenant-404").await;
    b.goto(&format!("{base}/admin/runners")).await;
    b.wait_text("main h1", "403").await;
    visit(&b, &format!("{base}/admin/audit?tenant=globex"), "main h1", "audit-other-tenant").await;
    assert!(b.text("main h1").await.contains("404"), "another tenant's audit log is not found");
    visit(&b, &format!("{base}/admin/audit"), "#audit", "audit-own").await;
    assert!(!b.source().await.contains("globex"));

    // Revoking the key ends its session at once.
    let initech_key_id = initech_admin.split('_').nth(1).expect("key id");
    let (status, _) =
        app.call(Method::DELETE, &format!("/api/v1/tenants/initech/keys/{initech_key_id}"), &app.admin_key, None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the key cache's lifetime
    b.goto(&format!("{base}/admin")).await;
    b.wait_text("main", "session has ended").await;

    // A viewer sees models but changes nothing; suspending the tenant ends the session.
    let viewer = app.key("initech", "viewer", &app.admin_key).await;
    sign_in(&b, base, &viewer).await;
    visit(&b, &format!("{base}/admin/tenants/initech/models"), "main h1", "models-viewer").await;
    assert!(b.find_all("#model-name").await.is_empty(), "a viewer is offered no form");
    let cookie = b.cookie(gateway::dashboard::COOKIE).await.expect("the session cookie");
    let csrf = b.attribute("input[name=csrf]", "value").await.expect("the page's token");
    let made = app
        .client
        .post(format!("{base}/admin/tenants/initech/models"))
        .header("cookie", format!("{}={cookie}", gateway::dashboard::COOKIE))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name=sneaky&task=embedding&csrf={csrf}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(made.status(), 403, "a viewer's post is refused");
    let (status, _) = app.call(Method::POST, "/api/v1/tenants/initech/suspend", &app.admin_key, None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    b.goto(&format!("{base}/admin/tenants/initech/models")).await;
    b.wait_text("main", "session has ended").await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_name_the_keys_that_acted_with_their_ids_on_hover() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (acme_admin, _) = app.acme_with_tiny_model().await;
    app.set_alias(&acme_admin, "acme", "tiny", "production", 1).await;
    // A platform admin's key belongs to no tenant; it is named all the same.
    app.set_alias(&app.admin_key, "acme", "tiny", "staging", 1).await;
    let id = |key: &str| key.split('_').nth(1).expect("key id").to_owned();
    let (acme_id, root_id) = (id(&acme_admin), id(&app.admin_key));
    let named = |page: &str, name: &str, id: &str| {
        assert!(page.contains(&format!("title=\"{id}\">{name}</span>")), "{name} with {id} on hover:\n{page}");
        assert!(!page.contains(&format!(">{id}<")), "{id} is not shown as text:\n{page}");
    };

    let model = app.dashboard_page(&acme_admin, "/admin/tenants/acme/models/tiny").await;
    named(&model, "admin key", &acme_id);
    named(&model, "bootstrap admin", &root_id);
    let version = app.dashboard_page(&acme_admin, "/admin/tenants/acme/models/tiny/versions/1").await;
    named(&version, "admin key", &acme_id);
    let audit = app.dashboard_page(&acme_admin, "/admin/audit").await;
    named(&audit, "admin key", &acme_id);

    let runners = app.dashboard_page(&app.admin_key, "/admin/runners").await;
    assert!(runners.contains("<dt>Device</dt><dd>CPU</dd>"), "the device by its name:\n{runners}");
    app.stop().await;
}
