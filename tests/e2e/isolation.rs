//! A tenant can neither see nor call another tenant's models; keys, roles and revocation hold.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, read};
use crate::tiny_bert;

async fn isolation_on(database: Database) {
    let app = TestApp::spawn(AppOptions::new(database)).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let model_dir = app.dir.path().join("tiny");
    tiny_bert::write(&model_dir);
    app.upload_model(&acme, "acme", "tiny", &model_dir).await;
    app.set_alias(&acme, "acme", "tiny", "production", 1).await;

    let acme_invoker = app.key("acme", "invoker", &acme).await;
    let (status, body) = app.embed(&acme_invoker, "tiny:production", json!("hello world")).await;
    assert_eq!(status, 200, "acme calls its own model: {body}");

    // Every acme resource answers globex exactly as a missing one does.
    for path in [
        "/api/v1/tenants/acme/models",
        "/api/v1/tenants/acme/models/tiny",
        "/api/v1/tenants/acme/models/tiny/versions",
        "/api/v1/tenants/acme/models/tiny/versions/1",
        "/api/v1/tenants/acme/models/tiny/versions/1/files/config.json",
        "/api/v1/tenants/acme/keys",
    ] {
        let (status, body) = app.call(Method::GET, path, &globex, None).await;
        assert_eq!(status, 404, "globex reading {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
        let missing = path.replace("/acme/", "/nosuch/");
        let (missing_status, missing_body) = app.call(Method::GET, &missing, &globex, None).await;
        assert_eq!(missing_status, 404);
        assert_eq!(
            body["error"]["message"].as_str().map(|m| m.replace("acme", "nosuch")),
            missing_body["error"]["message"].as_str().map(str::to_owned)
        );
    }
    let (status, _) = app.call(Method::POST, "/api/v1/tenants/acme/models/tiny/versions", &globex, None).await;
    assert_eq!(status, 404, "globex cannot create versions in acme");
    for model in ["tiny", "tiny:production", "tiny@1"] {
        let (status, body) = app.embed(&globex, model, json!("hello")).await;
        assert_eq!(status, 404, "globex calling acme's {model}: {body}");
        assert_eq!(body["error"]["code"], "model_not_found");
    }
    let (status, body) = app.call(Method::GET, "/v1/models", &globex, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().map(Vec::len), Some(0), "globex lists none of acme's models: {body}");
    let (_, body) = app.call(Method::GET, "/v1/models", &acme_invoker, None).await;
    let ids: Vec<&str> = body["data"].as_array().expect("list").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["tiny", "tiny:production"]);

    // No key, a bad key, the wrong role, a revoked key.
    let (status, body) =
        read(app.req(Method::GET, "/api/v1/tenants/acme/models", None).send().await.expect("sent")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = app
        .call(
            Method::GET,
            "/api/v1/tenants/acme/models",
            "mg_abcdefghijkl_0000000000000000000000000000000000000000",
            None,
        )
        .await;
    assert_eq!(status, 401);
    let viewer = app.key("acme", "viewer", &acme).await;
    let version = app.new_version(&acme, "acme", "tiny").await;
    let (status, body) = app.put_file(&viewer, "acme", "tiny", version, "config.json", b"{}".to_vec(), false).await;
    assert_eq!(status, 403, "a viewer cannot upload: {body}");
    let (status, _) = app.call(Method::GET, "/api/v1/tenants/acme/models/tiny", &viewer, None).await;
    assert_eq!(status, 200, "a viewer reads");
    let (status, _) = app.embed(&viewer, "tiny", json!("hello")).await;
    assert_eq!(status, 403, "a viewer does not call inference");
    let (status, _) = app.call(Method::POST, "/api/v1/tenants", &acme, Some(json!({ "name": "evil" }))).await;
    assert_eq!(status, 403, "a tenant admin does not create tenants");

    // Tokens work like the key they were issued for, and die with it.
    let (status, body) = app.call(Method::POST, "/api/v1/auth/token", &acme_invoker, None).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("a token").to_owned();
    let (status, _) = app.embed(&token, "tiny", json!("hello")).await;
    assert_eq!(status, 200, "the token calls inference");
    let (status, _) = app.call(Method::POST, "/api/v1/auth/token", &token, None).await;
    assert_eq!(status, 403, "a token cannot mint tokens");
    let (_, keys) = app.call(Method::GET, "/api/v1/tenants/acme/keys", &acme, None).await;
    assert!(keys.to_string().find("\"key\"").is_none(), "listing keys shows no secret");
    let invoker_id =
        keys["data"].as_array().expect("keys").iter().find(|k| k["role"] == "invoker").expect("the invoker key")["id"]
            .as_str()
            .expect("id")
            .to_owned();
    let (status, _) = app.call(Method::DELETE, &format!("/api/v1/tenants/acme/keys/{invoker_id}"), &globex, None).await;
    assert_eq!(status, 404, "globex cannot revoke acme's key");
    let (status, _) = app.call(Method::DELETE, &format!("/api/v1/tenants/acme/keys/{invoker_id}"), &acme, None).await;
    assert_eq!(status, 200);
    let (status, _) = app.embed(&acme_invoker, "tiny", json!("hello")).await;
    assert_eq!(status, 401, "a revoked key is refused");
    let (status, _) = app.embed(&token, "tiny", json!("hello")).await;
    assert_eq!(status, 401, "a token of a revoked key is refused");

    // Every management change is in the tenant's audit log, newest first, and only there.
    let (status, audit) = app.call(Method::GET, "/api/v1/tenants/acme/audit", &acme, None).await;
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> =
        audit["data"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions.first(), Some(&"key.revoke"), "newest first: {actions:?}");
    for action in [
        "tenant.create",
        "key.create",
        "model.create",
        "version.create",
        "version.file.put",
        "version.commit",
        "alias.set",
    ] {
        assert!(actions.contains(&action), "{action} is audited: {actions:?}");
    }
    let revoke = &audit["data"][0];
    assert_eq!(
        (revoke["before"]["revoked_at"].is_null(), revoke["after"]["revoked_at"].is_string()),
        (true, true),
        "{revoke}"
    );
    let (status, _) = app.call(Method::GET, "/api/v1/tenants/acme/audit", &globex, None).await;
    assert_eq!(status, 404, "globex cannot read acme's audit log");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_tenant_gets_404_and_roles_and_revocation_hold() {
    for database in Database::all("isolation") {
        isolation_on(database).await;
    }
}
