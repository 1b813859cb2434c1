//! Certificates made at test time (rcgen): certificate authorities, server certificates
//! for names and loopback addresses, client certificates, written as PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

/// A certificate and its key, as PEM, and where they were written.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.cert.pem()).expect("write CA");
        path
    }

    fn issue(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        dir: &Path,
        file: &str,
    ) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("issue certificate");
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, &issued.cert_pem).expect("write cert");
        std::fs::write(&issued.key, &issued.key_pem).expect("write key");
        issued
    }

    /// A server certificate for these names (DNS names or IP addresses).
    pub fn server(&self, names: &[&str], dir: &Path, file: &str) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, dir, file)
    }

    pub fn client(&self, name: &str, dir: &Path, file: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, dir, file)
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("root");
        roots
    }
}

fn chain_and_key(
    issued: &Issued,
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let certs = rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = rustls_pemfile::private_key(&mut issued.key_pem.as_bytes())
        .expect("key")
        .expect("a key");
    (certs, key)
}

/// A TLS server configuration for a test upstream; `clients`: require certificates from it.
pub fn server_config(issued: &Issued, clients: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    install_crypto();
    let (certs, key) = chain_and_key(issued);
    let builder = rustls::ServerConfig::builder();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder(Arc::new(ca.roots()))
                .build()
                .expect("client verifier"),
        ),
    };
    Arc::new(builder.with_single_cert(certs, key).expect("server config"))
}
