//! Tokens: the JWT attack corpus, key rotation with JWKS, an external OIDC issuer, and
//! revocation and suspension reaching every gateway within a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp};

fn now() -> i64 {
    registry::db::now_ms() / 1000
}

/// Signs `claims` with the PKCS#8 PEM Ed25519 key `pem`, naming `kid`.
fn sign(pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_pem(pem.as_bytes()).expect("an Ed25519 PEM"))
        .expect("signed")
}

fn new_pem() -> String {
    let seed: [u8; 32] = rand_seed();
    ed25519_dalek::SigningKey::from_bytes(&seed)
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("PEM")
        .to_string()
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed
}

async fn token_for(app: &TestApp, key: &str) -> String {
    let (status, body) = app.call(Method::POST, "/api/v1/auth/token", key, None).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().expect("a token").to_owned()
}

async fn jwks(app: &TestApp) -> Vec<String> {
    let body: Value =
        app.req(Method::GET, "/.well-known/jwks.json", None).send().await.expect("sent").json().await.expect("JSON");
    body["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().expect("kid").to_owned()).collect()
}

/// The status and error message a token gets on a tenant route.
async fn try_token(app: &TestApp, token: &str) -> (u16, String) {
    let (status, body) = app.call(Method::GET, "/api/v1/tenants/acme/models", token, None).await;
    (status, body["error"]["message"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jwt_attack_corpus_is_refused_with_clear_errors() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let key = app.key("acme", "developer", &admin).await;
    let token = token_for(&app, &key).await;
    assert_eq!(try_token(&app, &token).await.0, 200, "a good token works");
    let pem = std::fs::read_to_string(app.data_dir().join("jwt-signing-key.pem")).expect("the dev signing key");
    let kid = jsonwebtoken::decode_header(&token).expect("header").kid.expect("kid");
    let parts: Vec<&str> = token.split('.').collect();
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).expect("payload")).expect("claims");
    let with = |change: Value| {
        let mut c = claims.clone();
        for (k, v) in change.as_object().expect("object") {
            c[k] = v.clone();
        }
        sign(&pem, &kid, &c)
    };
    let header = |h: Value| B64.encode(h.to_string());
    let jwks_x: Value =
        app.req(Method::GET, "/.well-known/jwks.json", None).send().await.expect("sent").json().await.expect("JSON");
    let public = B64.decode(jwks_x["keys"][0]["x"].as_str().expect("x")).expect("public key");
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(&public)).expect("signed")
    };
    let t = now();
    let corpus: Vec<(&str, String, &str)> = vec![
        ("alg none", format!("{}.{}.", header(json!({"alg": "none", "kid": kid})), parts[1]), "not a well-formed JWT"),
        ("HS256 keyed with the public key", hs256, "algorithm"),
        (
            "RS256 header on an Ed25519 signature",
            format!("{}.{}.{}", header(json!({"alg": "RS256", "kid": kid})), parts[1], parts[2]),
            "algorithm",
        ),
        ("expired", with(json!({"exp": t - 120, "iat": t - 300, "nbf": t - 300})), "expired"),
        ("nbf in the future", with(json!({"nbf": t + 3600})), "not valid yet"),
        ("wrong iss", with(json!({"iss": "someone-else"})), "issuer"),
        ("wrong aud", with(json!({"aud": "another-service"})), "audience"),
        ("unknown kid", sign(&new_pem(), "0123456789abcdef", &claims), "kid"),
        ("another key under our kid", sign(&new_pem(), &kid, &claims), "signature"),
        (
            "tampered payload",
            format!("{}.{}.{}", parts[0], B64.encode(json!({"sub": "root"}).to_string()), parts[2]),
            "signature",
        ),
        ("truncated", token[..token.len() - 10].to_owned(), "signature"),
        ("not base64", format!("{}.!!!.{}", parts[0], parts[2]), "well-formed"),
        ("huge", format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]), "longer than"),
    ];
    for (name, bad, expected) in &corpus {
        let (status, message) = try_token(&app, bad).await;
        assert_eq!(status, 401, "{name}: {message}");
        assert!(message.contains(expected), "{name}: {message:?} should say {expected:?}");
    }

    // A valid token of a suspended tenant, then of a revoked key.
    let (status, body) = app.call(Method::POST, "/api/v1/tenants/acme/suspend", &app.admin_key, None).await;
    assert_eq!((status, body["suspended_at"].is_string()), (200, true), "{body}");
    for credential in [&token, &key] {
        let (status, message) = try_token(&app, credential).await;
        assert_eq!(status, 401);
        assert!(message.contains("suspended"), "{message}");
    }
    assert_eq!(app.call(Method::POST, "/api/v1/tenants/acme/resume", &app.admin_key, None).await.0, 200);
    assert_eq!(try_token(&app, &token).await.0, 200, "resuming restores the tenant's tokens");
    let id = key.split('_').nth(1).expect("key id");
    let (status, _) = app.call(Method::DELETE, &format!("/api/v1/tenants/acme/keys/{id}"), &admin, None).await;
    assert!(status == 200 || status == 204, "revoked: {status}");
    let (status, message) = try_token(&app, &token).await;
    assert_eq!(status, 401);
    assert!(message.contains("revoked"), "{message}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_keys_rotate_and_the_jwks_lists_them() {
    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let old_token = token_for(&app, &admin).await;
    let old_kid = jsonwebtoken::decode_header(&old_token).expect("header").kid.expect("kid");
    assert_eq!(jwks(&app).await, std::slice::from_ref(&old_kid));

    let old_file = app.data_dir().join("jwt-signing-key.pem");
    let new_file = app.data_dir().join("next-signing-key.pem");
    std::fs::write(&new_file, new_pem()).expect("a new key");
    app.config_mut().gateway.signing_key_file = Some(new_file.clone());
    app.config_mut().gateway.previous_signing_key_files = vec![old_file];
    app.restart().await;
    assert_eq!(try_token(&app, &old_token).await.0, 200, "tokens of the previous key work until they expire");
    let new_token = token_for(&app, &admin).await;
    let new_kid = jsonwebtoken::decode_header(&new_token).expect("header").kid.expect("kid");
    assert_ne!(new_kid, old_kid, "new tokens use the new key");
    assert_eq!(jwks(&app).await, [new_kid.clone(), old_kid.clone()], "the JWKS shows both");

    app.config_mut().gateway.previous_signing_key_files = Vec::new();
    app.restart().await;
    assert_eq!(jwks(&app).await, [new_kid], "then only the new one");
    assert_eq!(try_token(&app, &new_token).await.0, 200);
    let (status, message) = try_token(&app, &old_token).await;
    assert_eq!(status, 401, "the dropped key verifies nothing: {message}");
    app.stop().await;
}

/// An identity provider on loopback: serves its JWKS and counts the fetches.
async fn identity_provider(public_x: String, kid: String) -> (String, Arc<AtomicUsize>, actix_web::dev::ServerHandle) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let server = actix_web::HttpServer::new(move || {
        let (x, kid, counter) = (public_x.clone(), kid.clone(), counter.clone());
        actix_web::App::new().route(
            "/jwks.json",
            actix_web::web::get().to(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid, "x": x}]});
                async move { actix_web::HttpResponse::Ok().json(body) }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{addr}"), fetches, handle)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oidc_issuers_tokens_carry_tenant_and_role_from_their_claims() {
    let pem = new_pem();
    let signing =
        <ed25519_dalek::SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem).expect("key");
    let x = B64.encode(signing.verifying_key().to_bytes());
    let (idp, fetches, server) = identity_provider(x, "idp-key-1".into()).await;

    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    app.tenant("globex").await;
    app.config_mut().gateway.oidc = vec![gateway::oidc::OidcIssuer {
        name: "corp".into(),
        issuer: idp.clone(),
        jwks_url: format!("{idp}/jwks.json"),
        audience: "modelgate".into(),
        tenant_claim: "org".into(),
        role_claim: "groups".into(),
        role_map: [("ml-devs".to_owned(), "developer".to_owned()), ("ml-viewers".to_owned(), "viewer".to_owned())]
            .into(),
    }];
    app.restart().await;
    let token = |org: &str, groups: Value, iss: &str, kid: &str| {
        let t = now();
        let claims = json!({"iss": iss, "aud": "modelgate", "sub": "alice", "exp": t + 600, "iat": t, "org": org, "groups": groups});
        sign(&pem, kid, &claims)
    };
    let developer = token("acme", json!(["staff", "ml-devs"]), &idp, "idp-key-1");
    let (status, body) = app
        .call(Method::POST, "/api/v1/tenants/acme/models", &developer, Some(json!({"name": "m", "task": "embedding"})))
        .await;
    assert_eq!(status, 201, "a developer by its groups claim creates a model: {body}");
    assert_eq!(app.call(Method::GET, "/api/v1/tenants/acme/keys", &developer, None).await.0, 403, "but is no admin");
    let viewer = token("acme", json!("ml-viewers"), &idp, "idp-key-1");
    assert_eq!(app.call(Method::GET, "/api/v1/tenants/acme/models/m", &viewer, None).await.0, 200);
    let (status, _) = app
        .call(Method::POST, "/api/v1/tenants/acme/models", &viewer, Some(json!({"name": "n", "task": "embedding"})))
        .await;
    assert_eq!(status, 403, "a viewer changes nothing");
    let globex = token("globex", json!("ml-devs"), &idp, "idp-key-1");
    assert_eq!(
        app.call(Method::GET, "/api/v1/tenants/acme/models/m", &globex, None).await.0,
        404,
        "another tenant's token sees nothing"
    );
    let (_, audit) = app.call(Method::GET, "/api/v1/tenants/acme/audit", &app.admin_key, None).await;
    assert!(audit.to_string().contains("oidc:corp:alice"), "the external principal is the audit actor: {audit}");

    let (status, message) =
        try_token(&app, &token("acme", json!("ml-devs"), "https://not-configured.example", "idp-key-1")).await;
    assert_eq!(status, 401, "an unconfigured issuer: {message}");
    assert!(message.contains("issuer"), "{message}");
    let (status, message) = try_token(&app, &token("acme", json!("ml-admins"), &idp, "idp-key-1")).await;
    assert_eq!(status, 401, "no mapped role: {message}");
    let before = fetches.load(Ordering::SeqCst);
    for i in 0..5 {
        let (status, message) = try_token(&app, &token("acme", json!("ml-devs"), &idp, &format!("made-up-{i}"))).await;
        assert_eq!(status, 401, "{message}");
        assert!(message.contains("kid"), "{message}");
    }
    assert!(fetches.load(Ordering::SeqCst) - before <= 1, "unknown kids refetch the JWKS at most once per interval");
    let _ = admin;
    app.stop().await;
    server.stop(true).await;
}

async fn revocation_reaches_another_gateway_within_a_second(database: Database) {
    let app = TestApp::spawn(AppOptions::new(database)).await;
    let admin = app.tenant("acme").await;
    let other = app.second_gateway().await;
    let key = app.key("acme", "developer", &admin).await;
    assert_eq!(try_token(&other, &key).await.0, 200, "the second gateway knows (and caches) the key");
    let id = key.split('_').nth(1).expect("key id");
    let (status, body) = app.call(Method::DELETE, &format!("/api/v1/tenants/acme/keys/{id}"), &admin, None).await;
    assert!(status == 200 || status == 204, "revoking: {status} {body}");
    assert_eq!(try_token(&app, &key).await.0, 401, "the revoking gateway refuses it at once");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(try_token(&other, &key).await.0, 401, "the other gateway refuses it within a second");

    let key = app.key("acme", "developer", &admin).await;
    assert_eq!(try_token(&other, &key).await.0, 200);
    assert_eq!(app.call(Method::POST, "/api/v1/tenants/acme/suspend", &app.admin_key, None).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(try_token(&other, &key).await.0, 401, "a suspension reaches the other gateway within a second");
    other.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_and_suspension_reach_every_gateway_within_a_second() {
    for database in Database::all("revocation across gateways") {
        revocation_reaches_another_gateway_within_a_second(database).await;
    }
}
