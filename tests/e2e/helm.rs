//! The Helm chart, rendered by our own small renderer (deploy/helm/render.py; there is no helm
//! binary here), checked against the binary: its config file loads with the binary's strict
//! config loader, probes name routes the binary serves, ports match the config, the runner
//! Service the gateways discover is headless, runners ask for GPUs, every alert's runbook and
//! metrics are in docs/OPERATIONS.md, both roles mount the TLS Secret the config's mutual-TLS
//! files are read from (and the binary accepts those files), and a NetworkPolicy lets only
//! gateways reach the runners' gRPC port.

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
    assert_eq!(port(container, "metrics"), config.metrics.listen.expect("the chart sets it").port());
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
    assert_eq!(port(container, "metrics"), config.metrics.listen.expect("the chart sets it").port());
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

    check_runner_tls(&manifests, toml);
    check_network_policy(&manifests);

    // Plaintext between the roles only when asked for: no TLS files, nothing mounted.
    let manifests = render(&python, &["tls.insecure=true", "networkPolicy.enabled=false"]);
    let toml = one(&manifests, "ConfigMap", "mg-modelgate-config")["data"]["modelgate.toml"].as_str().expect("toml");
    std::fs::write(dir.path().join("modelgate.toml"), toml).expect("write");
    let config = modelgate::config::Config::load(Some(&dir.path().join("modelgate.toml"))).expect("the config loads");
    assert!(config.runner.tls.insecure && config.gateway.runner_tls.insecure);
    assert!(!config.runner.tls.has_files() && !config.gateway.runner_tls.has_files());
    assert!(!manifests.iter().any(|m| m["kind"] == "NetworkPolicy"));
    let runner = one(&manifests, "StatefulSet", "mg-modelgate-runner");
    let volumes = runner["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
    assert!(!volumes.iter().any(|v| v["name"] == "tls"));

    // TLS Secrets made from values carry the keys the config reads.
    let manifests = render(&python, &["tls.create=true"]);
    for name in ["mg-modelgate-runner-tls", "mg-modelgate-gateway-tls"] {
        let secret = one(&manifests, "Secret", name);
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            assert!(secret["stringData"].get(key).is_some(), "{name} has {key}");
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

/// The volume a container mounts at `dir`: its Secret's name.
fn secret_mounted_at<'a>(pod: &'a Value, dir: &std::path::Path) -> &'a str {
    let container = &pod["containers"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"].as_str().map(std::path::Path::new) == Some(dir))
        .unwrap_or_else(|| panic!("nothing mounted at {}", dir.display()));
    let volume =
        pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == mount["name"]).expect("a volume");
    volume["secret"]["secretName"].as_str().expect("a Secret")
}

/// Both roles read their mutual-TLS files from a Secret they mount, and the binary accepts a
/// certificate set laid out under those names (`ca.crt`, `tls.crt`, `tls.key`).
fn check_runner_tls(manifests: &[Value], toml: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("modelgate.toml"), toml).expect("write");
    let config = modelgate::config::Config::load(Some(&dir.path().join("modelgate.toml"))).expect("the config loads");
    let (runner_tls, gateway_tls) = (&config.runner.tls, &config.gateway.runner_tls);
    assert!(!runner_tls.insecure && !gateway_tls.insecure, "mutual TLS by default");
    assert_eq!(gateway_tls.server_name, gateway::runners::DEFAULT_SERVER_NAME);
    let folder =
        |file: &Option<std::path::PathBuf>| file.as_deref().and_then(std::path::Path::parent).map(ToOwned::to_owned);
    let runner_dir = folder(&runner_tls.ca_file).expect("runner.tls.ca_file");
    let gateway_dir = folder(&gateway_tls.ca_file).expect("gateway.runner_tls.ca_file");
    for tls in [&runner_tls.cert_file, &runner_tls.key_file] {
        assert_eq!(folder(tls).as_ref(), Some(&runner_dir));
    }
    for tls in [&gateway_tls.cert_file, &gateway_tls.key_file] {
        assert_eq!(folder(tls).as_ref(), Some(&gateway_dir));
    }
    let runner = &one(manifests, "StatefulSet", "mg-modelgate-runner")["spec"]["template"]["spec"];
    let gateway = &one(manifests, "Deployment", "mg-modelgate-gateway")["spec"]["template"]["spec"];
    assert_eq!(secret_mounted_at(runner, &runner_dir), "mg-modelgate-runner-tls");
    assert_eq!(secret_mounted_at(gateway, &gateway_dir), "mg-modelgate-gateway-tls");

    // A cert-manager-style Secret per role, written where the config looks, starts both sides
    // (the runner on 0.0.0.0, which without certificates refuses to start).
    let made = tempfile::tempdir().expect("tempdir");
    let generated = modelgate::tls::generated(&made.path().join("tls")).expect("certificates");
    let mut config = config.clone();
    for (side, files, tls) in [
        ("runner", &generated.runner, &mut config.runner.tls as &mut dyn TlsFiles),
        ("gateway", &generated.gateway, &mut config.gateway.runner_tls as &mut dyn TlsFiles),
    ] {
        let secret = made.path().join(side);
        std::fs::create_dir_all(&secret).expect("folder");
        std::fs::write(secret.join("ca.crt"), &files.ca).expect("write");
        std::fs::write(secret.join("tls.crt"), &files.cert).expect("write");
        std::fs::write(secret.join("tls.key"), secrecy::ExposeSecret::expose_secret(&files.key)).expect("write");
        tls.move_to(&secret);
    }
    let listen = config.runner.listen;
    assert!(!listen.ip().is_loopback());
    assert!(modelgate::tls::runner_server(&config, listen).expect("the runner's TLS").is_some());
    assert!(modelgate::tls::gateway_client(&config).expect("the gateway's TLS").is_some());
}

/// The three file settings of either side, moved into another folder (same file names).
trait TlsFiles {
    fn move_to(&mut self, dir: &std::path::Path);
}

fn moved(file: &mut Option<std::path::PathBuf>, dir: &std::path::Path) {
    *file = file.as_ref().and_then(|f| f.file_name()).map(|name| dir.join(name));
}

impl TlsFiles for runner::tls::TlsConfig {
    fn move_to(&mut self, dir: &std::path::Path) {
        for file in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file] {
            moved(file, dir);
        }
    }
}

impl TlsFiles for gateway::runners::RunnerTlsConfig {
    fn move_to(&mut self, dir: &std::path::Path) {
        for file in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file] {
            moved(file, dir);
        }
    }
}

/// Only the release's gateway pods reach the runners' gRPC port; the metrics port is open to
/// the scrapers `networkPolicy.metricsFrom` names; every port is one the runner names.
fn check_network_policy(manifests: &[Value]) {
    let policy = &one(manifests, "NetworkPolicy", "mg-modelgate-runner")["spec"];
    let runner = &one(manifests, "StatefulSet", "mg-modelgate-runner")["spec"]["template"];
    let gateway = &one(manifests, "Deployment", "mg-modelgate-gateway")["spec"]["template"];
    let selects = |selector: &Value, pod: &Value| {
        selector["matchLabels"].as_object().expect("labels").iter().all(|(k, v)| pod["metadata"]["labels"][k] == *v)
    };
    assert!(selects(&policy["podSelector"], runner), "the policy is the runners'");
    assert!(!selects(&policy["podSelector"], gateway));
    assert_eq!(policy["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = policy["ingress"].as_array().expect("ingress rules");
    let container = &runner["spec"]["containers"][0];
    let named: Vec<&Value> = container["ports"].as_array().expect("ports").iter().map(|p| &p["name"]).collect();
    for rule in rules {
        for port in rule["ports"].as_array().expect("ports") {
            assert!(named.contains(&&port["port"]), "{} is a port of the runner", port["port"]);
        }
    }
    let grpc: Vec<&Value> =
        rules.iter().filter(|r| r["ports"].as_array().is_some_and(|p| p.iter().any(|p| p["port"] == "grpc"))).collect();
    assert_eq!(grpc.len(), 1, "one rule admits gRPC");
    let from = grpc[0]["from"].as_array().expect("peers");
    assert!(!from.is_empty(), "an empty `from` would admit everyone");
    for peer in from {
        assert!(
            peer.get("namespaceSelector").is_none() && peer.get("ipBlock").is_none(),
            "only pods of this namespace: {peer}"
        );
        assert!(selects(&peer["podSelector"], gateway), "gateways may call runners");
        assert!(!selects(&peer["podSelector"], runner), "runners may not call each other");
    }
    let metrics = rules.iter().find(|r| r["ports"][0]["port"] == "metrics").expect("a rule for the metrics port");
    assert_eq!(metrics["ports"].as_array().map(Vec::len), Some(1), "the metrics rule opens nothing else");
}
