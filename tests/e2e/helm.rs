//! The Helm chart, rendered by our own small renderer (deploy/helm/render.py; there is no helm
//! binary here), checked against the binary: its config file loads with the binary's strict
//! config loader, probes name routes the binary serves, ports match the config, the runner
//! Service the gateways discover is headless, runners ask for GPUs, and every alert's
//! runbook and metrics are in docs/OPERATIONS.md.

use std::process::Command;

use serde_json::Value;

use crate::helpers::service_var;

fn render(python: &str, sets: &[&str]) -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut command = Command::new(python);
    command.arg(format!("{root}/deploy/helm/render.py")).arg(format!("{root}/deploy/helm/modelgate"));
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().expect("the renderer runs");
    assert!(output.status.success(), "rendering failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the renderer prints JSON")
}

fn one<'a>(manifests: &'a [Value], kind: &str, name: &str) -> &'a Value {
    manifests
        .iter()
        .find(|m| m["kind"] == kind && m["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn port(container: &Value, name: &str) -> u16 {
    let found = container["ports"].as_array().expect("ports").iter().find(|p| p["name"] == name);
    found.and_then(|p| p["containerPort"].as_u64()).and_then(|p| u16::try_from(p).ok()).expect("a named port")
}

#[test]
fn the_helm_chart_matches_the_binary() {
    let Some(python) = service_var("MODELGATE_TEST_PYTHON", "the Helm chart's rendering (PyYAML)") else { return };
    let sets = [
        "gateway.ingress.enabled=true",
        "secrets.storageCredentialsSecret=s3-creds",
        "config.otlpEndpoint=http://otel-collector:4317",
    ];
    let manifests = render(&python, &sets);

    // The config file is one the binary accepts (unknown keys fail its loader).
    let toml = one(&manifests, "ConfigMap", "mg-modelgate-config")["data"]["modelgate.toml"].as_str().expect("toml");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("modelgate.toml"), toml).expect("write");
    let config = modelgate::config::Config::load(Some(&dir.path().join("modelgate.toml"))).expect("the config loads");
    assert_eq!(config.tracing.otlp_endpoint.as_deref(), Some("http://otel-collector:4317"));

    let gateway = one(&manifests, "Deployment", "mg-modelgate-gateway");
    let container = &gateway["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(port(container, "http"), config.gateway.listen.port());
    assert_eq!(port(container, "metrics"), config.metrics.listen.port());
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        assert_eq!(container[probe]["httpGet"]["port"], "http");
        let (rule, _) = gateway::table::rule_for(&actix_web::http::Method::GET, path).expect("a route");
        assert_eq!(rule.need, gateway::table::Need::Public, "{path} needs no credential");
    }
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], "s3-creds");
    assert_eq!(container["args"][2], "gateway");

    let runner = one(&manifests, "StatefulSet", "mg-modelgate-runner");
    let container = &runner["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(port(container, "grpc"), config.runner.listen.port());
    assert_eq!(port(container, "metrics"), config.metrics.listen.port());
    assert_eq!(container["livenessProbe"]["httpGet"], serde_json::json!({"path": "/healthz", "port": "metrics"}));
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], "grpc");
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert!(
        container["volumeMounts"].as_array().expect("mounts").iter().any(|m| m["mountPath"] == "/var/cache/modelgate")
    );
    assert_eq!(config.runner.cache_dir.as_deref(), Some(std::path::Path::new("/var/cache/modelgate")));

    // Gateways find runners through the headless Service the StatefulSet names.
    let headless = one(&manifests, "Service", "mg-modelgate-runner");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(runner["spec"]["serviceName"], "mg-modelgate-runner");
    let dns = config.gateway.routing.dns.as_deref().expect("runner discovery by DNS");
    assert_eq!(dns, format!("mg-modelgate-runner.default.svc.cluster.local:{}", config.runner.listen.port()));
    assert!(config.gateway.runners.is_empty(), "no static runner list in a cluster");

    let service = one(&manifests, "Service", "mg-modelgate-gateway");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        one(&manifests, "HorizontalPodAutoscaler", "mg-modelgate-gateway")["spec"]["scaleTargetRef"]["name"],
        "mg-modelgate-gateway"
    );
    let pdb = one(&manifests, "PodDisruptionBudget", "mg-modelgate-gateway");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], "gateway");
    let ingress = one(&manifests, "Ingress", "mg-modelgate");
    assert_eq!(ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"], "mg-modelgate-gateway");
    let job = one(&manifests, "Job", "mg-modelgate-migrate");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["args"], serde_json::json!(["migrate"]));

    // Every alert has a runbook in OPERATIONS.md and uses documented metrics.
    let docs = include_str!("../../docs/OPERATIONS.md");
    let rules = &one(&manifests, "PrometheusRule", "mg-modelgate")["spec"]["groups"][0]["rules"];
    let rules = rules.as_array().expect("rules");
    assert_eq!(rules.len(), 5, "runner down, error rate, queue saturation, cache thrash, DB pool exhaustion");
    for rule in rules {
        let anchor = rule["annotations"]["runbook_url"].as_str().and_then(|u| u.split('#').nth(1)).expect("a runbook");
        let heading = format!("### {}", anchor.replace('-', " "));
        assert!(docs.to_lowercase().contains(&heading.to_lowercase()), "no runbook {heading:?} in OPERATIONS.md");
        let expr = rule["expr"].as_str().expect("expr");
        for metric in expr.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| w.starts_with("modelgate_")) {
            assert!(docs.contains(&format!("`{metric}`")), "{metric} in an alert is not a documented metric");
        }
    }

    // With an existing Secret, the chart makes none and mounts that one.
    let manifests = render(&python, &["secrets.existingSecret=prod-secrets", "metrics.prometheusRule.enabled=false"]);
    assert!(!manifests.iter().any(|m| m["kind"] == "Secret"));
    assert!(!manifests.iter().any(|m| m["kind"] == "PrometheusRule"));
    let gateway = one(&manifests, "Deployment", "mg-modelgate-gateway");
    let volumes = gateway["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "prod-secrets"));
}
