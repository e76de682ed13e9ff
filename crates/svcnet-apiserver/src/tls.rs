//! The server's TLS material and credentials, kept in the data directory.
//!
//! A CA is generated on first start and reused; the serving certificate is re-issued from it on
//! every start, so a changed listen address or service range never leaves a stale SAN. A random
//! bearer token (`token`, mode 0600) and the admin `kubeconfig` (mode 0600, CA data inline)
//! complete the set. Client certificates and RBAC are deliberately absent: one admin token.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, Result};

/// Everything `start` needs for TLS and authentication.
pub struct Material {
    pub server_config: Arc<rustls::ServerConfig>,
    pub token: String,
    pub ca_pem: String,
}

fn tls_err(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Tls(Box::new(e))
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::DataDir { path: path.display().to_string(), source }
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(contents).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    Ok(())
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "svcnet-ca");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    Ok(params)
}

/// Loads or creates the CA, issues the serving certificate, loads or creates the token.
pub fn prepare(data_dir: &Path, listen: SocketAddr, extra_ips: &[IpAddr]) -> Result<Material> {
    fs::create_dir_all(data_dir).map_err(|e| io_err(data_dir, e))?;
    let ca_crt_path = data_dir.join("ca.crt");
    let ca_key_path = data_dir.join("ca.key");
    let (ca_pem, ca_key_pem) =
        match (fs::read_to_string(&ca_crt_path), fs::read_to_string(&ca_key_path)) {
            (Ok(c), Ok(k)) => (c, k),
            _ => {
                let key = KeyPair::generate().map_err(tls_err)?;
                let cert = ca_params()?.self_signed(&key).map_err(tls_err)?;
                write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
                write_private(&ca_crt_path, cert.pem().as_bytes())?;
                (cert.pem(), key.serialize_pem())
            }
        };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(tls_err)?;
    // The CA parameters are deterministic, so the issuer rebuilt from them matches the stored
    // CA certificate (same subject, same key identifier).
    let issuer = Issuer::new(ca_params()?, ca_key);

    let mut sans: Vec<String> = vec![
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    let mut ips: Vec<IpAddr> = extra_ips.to_vec();
    if !listen.ip().is_unspecified() {
        ips.push(listen.ip());
    }
    for ip in ips {
        let s = ip.to_string();
        if !sans.contains(&s) {
            sans.push(s);
        }
    }
    let mut params = CertificateParams::new(sans).map_err(tls_err)?;
    params.distinguished_name.push(DnType::CommonName, "svcnet-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(tls_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(tls_err)?;
    write_private(&data_dir.join("apiserver.crt"), cert.pem().as_bytes())?;
    write_private(&data_dir.join("apiserver.key"), key.serialize_pem().as_bytes())?;

    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(tls_err)?;
    let chain = vec![cert.der().clone(), ca_der];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(tls_err)?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let token_path = data_dir.join("token");
    let token = match fs::read_to_string(&token_path) {
        Ok(t) if t.trim().len() >= 16 => t.trim().to_string(),
        _ => {
            let t = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            write_private(&token_path, t.as_bytes())?;
            t
        }
    };
    Ok(Material { server_config: Arc::new(server_config), token, ca_pem })
}

/// Writes `DIR/kubeconfig` (0600) for the admin and returns its path.
pub fn write_kubeconfig(
    data_dir: &Path,
    server_url: &str,
    ca_pem: &str,
    token: &str,
) -> Result<PathBuf> {
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: svcnet\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: svcnet\n  context:\n    cluster: svcnet\n    user: admin\n    namespace: default\ncurrent-context: svcnet\npreferences: {{}}\n"
    );
    let path = data_dir.join("kubeconfig");
    write_private(&path, text.as_bytes())?;
    Ok(path)
}
