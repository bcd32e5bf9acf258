//! The mutual TLS between gateways and runners: each side's certificates, from the files the
//! configuration names (`[runner.tls]`, `[gateway.runner_tls]`) or, where it names none, from
//! a CA this process makes in its data folder on first start and reuses afterwards
//! (`<data_dir>/tls`: a 0700 folder, every file 0600). The CA's own key is not kept: the
//! folder holds what the two sides need and nothing that could sign another certificate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

use crate::config::Config;

/// The folder of the generated certificates, under the data folder.
pub const DIR: &str = "tls";
const CA: &str = "ca.pem";
const RUNNER_CERT: &str = "runner.pem";
const RUNNER_KEY: &str = "runner.key";
const GATEWAY_CERT: &str = "gateway.pem";
const GATEWAY_KEY: &str = "gateway.key";

/// One side's material: the CA its peer must chain to, its own certificate and key (PEM).
pub struct Side {
    pub ca: String,
    pub cert: String,
    pub key: SecretString,
}

/// A CA with one certificate for runners (server) and one for gateways (client).
pub struct Generated {
    pub runner: Side,
    pub gateway: Side,
}

/// The certificates in `dir`, made there first if it does not exist. Made in a folder of
/// their own and renamed into place, so processes starting together on one data folder
/// end up with the same set.
pub fn generated(dir: &Path) -> anyhow::Result<Generated> {
    if !dir.exists() {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let scratch = parent.join(format!(".{DIR}-{}-{}", std::process::id(), unique()));
        crate::private::private_dir(&scratch)?;
        let made = generate().and_then(|files| {
            for (name, content) in files {
                crate::startup::write_private(&scratch.join(name), &content)?;
            }
            Ok(())
        });
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
        match std::fs::rename(&scratch, dir) {
            Ok(()) => tracing::info!(dir = %dir.display(), "made a CA and certificates for the runner's mutual TLS"),
            // Another process made them first: theirs are used.
            Err(_) if dir.exists() => std::fs::remove_dir_all(&scratch)?,
            Err(e) => return Err(e).with_context(|| format!("moving certificates into {}", dir.display())),
        }
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!("reading {}; delete {} to have new certificates made", path.display(), dir.display())
        })
    };
    let ca = read(CA)?;
    Ok(Generated {
        runner: Side { ca: ca.clone(), cert: read(RUNNER_CERT)?, key: SecretString::from(read(RUNNER_KEY)?) },
        gateway: Side { ca, cert: read(GATEWAY_CERT)?, key: SecretString::from(read(GATEWAY_KEY)?) },
    })
}

/// A new CA (P-256) and, signed by it, a runner certificate for the default server name and
/// loopback and a gateway client certificate: `(file name, PEM)` pairs.
fn generate() -> anyhow::Result<Vec<(&'static str, String)>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "modelgate runner CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf =
        |name: &str, purpose: ExtendedKeyUsagePurpose, extra: Vec<SanType>| -> anyhow::Result<(String, String)> {
            let mut params = CertificateParams::new(vec![name.to_owned()])?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.subject_alt_names.extend(extra);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![purpose];
            let key = KeyPair::generate()?;
            Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
        };
    let loopback = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    let (runner_cert, runner_key) =
        leaf(gateway::runners::DEFAULT_SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth, loopback)?;
    let (gateway_cert, gateway_key) = leaf("modelgate-gateway", ExtendedKeyUsagePurpose::ClientAuth, Vec::new())?;
    Ok(vec![
        (CA, ca_cert.pem()),
        (RUNNER_CERT, runner_cert),
        (RUNNER_KEY, runner_key),
        (GATEWAY_CERT, gateway_cert),
        (GATEWAY_KEY, gateway_key),
    ])
}

/// The runner's TLS: its configured files; else, on a loopback address, the data folder's
/// certificates; else (a runner reachable from other machines with nothing configured) an
/// error, unless `insecure` asks for plaintext.
pub fn runner_server(config: &Config, listen: SocketAddr) -> anyhow::Result<Option<ServerTlsConfig>> {
    let tls = &config.runner.tls;
    let side = if tls.insecure {
        anyhow::ensure!(!tls.has_files(), "runner.tls: set either the certificate files or insecure, not both");
        tracing::warn!(runner.listen = %listen, "runner.tls.insecure: the runner serves plaintext gRPC to anyone who can reach it");
        return Ok(None);
    } else if tls.has_files() {
        files("runner.tls", tls.ca_file.as_deref(), tls.cert_file.as_deref(), tls.key_file.as_deref())?
    } else {
        anyhow::ensure!(
            listen.ip().is_loopback(),
            "the runner listens on {listen}, which other machines can reach, and [runner.tls] names no certificates: \
             set runner.tls.ca_file (the CA of the gateways' certificates), cert_file and key_file, or \
             runner.tls.insecure = true where a network policy admits only gateways"
        );
        generated(&config.data_dir.join(DIR))?.runner
    };
    let server = runner::tls::server_config(&side.ca, &side.cert, side.key.expose_secret());
    // Parsed now, so that a bad file stops the start rather than the server task.
    tonic::transport::Server::builder().tls_config(server.clone()).context("the runner's TLS certificates")?;
    Ok(Some(server))
}

/// The gateway's TLS towards runners: its configured files, else the data folder's
/// certificates; None (plaintext) only when `insecure` says so.
pub fn gateway_client(config: &Config) -> anyhow::Result<Option<ClientTlsConfig>> {
    let tls = &config.gateway.runner_tls;
    let side = if tls.insecure {
        anyhow::ensure!(!tls.has_files(), "gateway.runner_tls: set either the certificate files or insecure, not both");
        tracing::warn!("gateway.runner_tls.insecure: runners are called over plaintext gRPC");
        return Ok(None);
    } else if tls.has_files() {
        files("gateway.runner_tls", tls.ca_file.as_deref(), tls.cert_file.as_deref(), tls.key_file.as_deref())?
    } else {
        generated(&config.data_dir.join(DIR))?.gateway
    };
    let client = gateway::runners::client_tls_config(&side.ca, &side.cert, side.key.expose_secret(), &tls.server_name);
    tonic::transport::Endpoint::from_static("https://localhost")
        .tls_config(client.clone())
        .context("the gateway's TLS certificates for runners")?;
    Ok(Some(client))
}

/// All three files of a side, read.
fn files(section: &str, ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Side> {
    let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) else {
        anyhow::bail!("{section}: set all of ca_file, cert_file and key_file");
    };
    let read = |path: &Path, what: &str| {
        std::fs::read_to_string(path).with_context(|| format!("reading {section}.{what} {}", path.display()))
    };
    Ok(Side {
        ca: read(ca, "ca_file")?,
        cert: read(cert, "cert_file")?,
        key: SecretString::from(read(key, "key_file")?),
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn certificates_are_made_once_private_and_reused() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = data.path().join(DIR);
        let first = generated(&dir).expect("made");
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            for name in [CA, RUNNER_CERT, RUNNER_KEY, GATEWAY_CERT, GATEWAY_KEY] {
                assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
            }
        }
        assert!(first.runner.key.expose_secret().contains("PRIVATE KEY"));
        assert!(first.gateway.cert.contains("BEGIN CERTIFICATE"));
        assert_eq!(first.runner.ca, first.gateway.ca, "one CA for both sides");

        let again = generated(&dir).expect("reused");
        assert_eq!(again.runner.ca, first.runner.ca, "a restart keeps the CA");
        assert_eq!(again.runner.key.expose_secret(), first.runner.key.expose_secret());
        assert_eq!(again.gateway.cert, first.gateway.cert);
        let leftovers: Vec<_> = std::fs::read_dir(data.path()).expect("list").collect();
        assert_eq!(leftovers.len(), 1, "no scratch folder left behind");
    }

    #[test]
    fn a_runner_beyond_loopback_without_certificates_refuses_to_start() {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = Config { data_dir: data.path().to_path_buf(), ..Config::default() };
        let public: SocketAddr = "0.0.0.0:50051".parse().expect("address");
        let error = runner_server(&config, public).expect_err("refused").to_string();
        assert!(error.contains("runner.tls"), "{error}");
        assert!(!data.path().join(DIR).exists(), "nothing made for a refused start");

        assert!(runner_server(&config, "127.0.0.1:0".parse().expect("address")).expect("loopback").is_some());
        config.runner.tls.insecure = true;
        assert!(runner_server(&config, public).expect("an explicit opt-out").is_none());
        config.runner.tls.ca_file = Some(data.path().join(DIR).join(CA));
        assert!(runner_server(&config, public).is_err(), "files and insecure together are a mistake");
        config.runner.tls.insecure = false;
        assert!(runner_server(&config, public).is_err(), "one file of three is a mistake");
        config.runner.tls.cert_file = Some(data.path().join(DIR).join(RUNNER_CERT));
        config.runner.tls.key_file = Some(data.path().join(DIR).join(RUNNER_KEY));
        assert!(runner_server(&config, public).expect("configured files").is_some());
    }
}
