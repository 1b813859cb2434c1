//! TLS material, read and checked when the config loads so that nothing fails later
//! (Pingora panics at service start on unreadable listener files, and parses upstream
//! client keys with `unwrap`): the listener's certificate behind a resolver that swaps
//! in a new one when its files change, and upstreams' CA and client certificates.

pub mod client;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use pingora::tls::ServerName;
use pingora::utils::tls::{CertKey, WrappedX509};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why TLS material was refused; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but what it holds cannot serve: `what` says why.
    #[error("{}: {what}", .path.display())]
    Content { path: PathBuf, what: String },
    #[error("{} and {} do not belong together: {why}", .cert.display(), .key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("tls.sni `{0}` is not a server name (an empty one would turn verification off)")]
    ServerName(String),
    #[error("sni is required: without it the upstream's certificate would not be verified")]
    MissingSni,
    #[error("client_cert and client_key go together")]
    HalfClientPair,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn content(path: &Path, what: String) -> TlsError {
    TlsError::Content {
        path: path.to_path_buf(),
        what,
    }
}

/// Reads every certificate of a PEM file; each must parse as X.509.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| content(path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(content(path, "no CERTIFICATE in the file".into()));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| content(path, format!("a certificate does not parse: {e}")))?;
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| content(path, format!("not PEM: {e}")))?
        .ok_or_else(|| {
            content(
                path,
                "no private key (PKCS#8, PKCS#1 or SEC1) in the file".into(),
            )
        })
}

/// The leaf's subject and expiry, for messages.
pub fn describe(cert: &CertificateDer) -> String {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, c)) => format!(
            "{} (expires {})",
            c.subject(),
            c.validity().not_after.to_datetime()
        ),
        Err(_) => "an unreadable certificate".to_string(),
    }
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    certify(read_certs(cert)?, &read_key(key)?, cert, key)
}

/// `certs` and `key_der` as read from `cert` and `key` (named in messages), checked to
/// belong together.
fn certify(
    certs: Vec<CertificateDer<'static>>,
    key_der: &PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let signer = rustls::crypto::ring::sign::any_supported_type(key_der)
        .map_err(|e| content(key, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok(ck)
}

type Stamp = Vec<(u64, Option<SystemTime>)>;

fn stamp(paths: &[&Path]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .map(|m| (m.len(), m.modified().ok()))
                .unwrap_or((0, None))
        })
        .collect()
}

/// The listener's certificate. Each handshake takes the current one; [`reload_if_changed`]
/// swaps in a new one when the files change (connections already open keep theirs).
///
/// [`reload_if_changed`]: CertResolver::reload_if_changed
pub struct CertResolver {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<Stamp>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl CertResolver {
    pub fn load(cert: &Path, key: &Path) -> Result<CertResolver, TlsError> {
        let seen = stamp(&[cert, key]);
        let ck = certified_key(cert, key)?;
        Ok(CertResolver {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(ck),
            seen: Mutex::new(seen),
        })
    }

    /// The leaf certificate served now, described.
    pub fn serving(&self) -> String {
        self.current
            .load()
            .cert
            .first()
            .map_or_else(String::new, describe)
    }

    /// Reads the files again if their size or modification time changed: `None` when
    /// unchanged, else whether the new pair was taken. A bad pair (say, the certificate
    /// written and the key not yet) keeps the old one serving and is tried again at the
    /// next change.
    pub fn reload_if_changed(&self) -> Option<Result<String, TlsError>> {
        let now = stamp(&[&self.cert, &self.key]);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return None;
        }
        *seen = now;
        Some(certified_key(&self.cert, &self.key).map(|ck| {
            self.current.store(Arc::new(ck));
            self.serving()
        }))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS to one upstream, as Pingora's peers take it.
#[derive(Clone)]
pub struct UpstreamTls {
    pub sni: String,
    /// Trusted roots; `None`: the system's.
    pub ca: Option<Arc<[WrappedX509]>>,
    /// A client certificate for mutual TLS.
    pub client: Option<Arc<CertKey>>,
    /// A digest of everything above (SNI, every trusted root, the client certificate
    /// chain and key): the pooled-connection key, so connections are shared only between
    /// upstreams that trust and present exactly the same things. Pingora's own reuse key
    /// leaves the trusted roots out.
    pub identity: u64,
    /// The same trust as a rustls client for HTTP/1.1 (`upstream::followed` speaks TLS
    /// itself, below Pingora, to follow the answers' bytes).
    pub http1: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

impl UpstreamTls {
    pub fn load(
        sni: &str,
        ca: Option<&Path>,
        client: Option<(&Path, &Path)>,
    ) -> Result<UpstreamTls, TlsError> {
        let server_name = match ServerName::try_from(sni.to_string()) {
            Ok(name) if !sni.is_empty() => name,
            _ => return Err(TlsError::ServerName(sni.to_string())),
        };
        let mut identity = Identity::default();
        identity.part(sni.as_bytes());
        let mut roots = None;
        let mut own = None;
        let ca = match ca {
            None => None,
            Some(path) => {
                let certs = read_certs(path)?;
                roots = Some((path, certs.clone()));
                identity.part(b"ca");
                let wrapped: Vec<WrappedX509> = certs
                    .into_iter()
                    .map(|c| {
                        identity.part(&c);
                        WrappedX509::new(c.to_vec(), pingora::utils::tls::parse_x509)
                    })
                    .collect();
                Some(Arc::from(wrapped.into_boxed_slice()))
            }
        };
        let client = match client {
            None => None,
            Some((cert, key)) => {
                // Checked the way Pingora will use them, so its `unwrap`s cannot fire.
                let certs = read_certs(cert)?;
                let key_der = read_key(key)?;
                certify(certs.clone(), &key_der, cert, key)?;
                own = Some((certs.clone(), key_der.clone_key(), cert, key));
                let der = key_der.secret_der().to_vec();
                PrivateKeyDer::try_from(der.clone())
                    .map_err(|e| content(key, format!("the key's DER is not recognised: {e}")))?;
                identity.part(b"client");
                certs.iter().for_each(|c| identity.part(c));
                identity.part(&der);
                Some(Arc::new(CertKey::new(
                    certs.into_iter().map(|c| c.to_vec()).collect(),
                    der,
                )))
            }
        };
        Ok(UpstreamTls {
            sni: sni.to_string(),
            ca,
            client,
            identity: identity.finish(),
            http1: client::http1_config(roots, own)?,
            server_name,
        })
    }
}

/// Length-prefixed parts hashed into one 64-bit key (xxh3, as the split uses).
#[derive(Default)]
struct Identity(Vec<u8>);

impl Identity {
    fn part(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn finish(self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name`, written as `cert.pem` and `key.pem`.
    fn write_pair(dir: &Path, name: &str) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
    }

    #[test]
    fn the_resolver_takes_a_new_pair_and_keeps_the_old_one_over_a_bad_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        write_pair(dir.path(), "first.example");
        let r = CertResolver::load(&cert, &key).expect("loads");
        let first = r.current.load_full();
        assert!(r.reload_if_changed().is_none(), "nothing changed");
        // A different size is a change even within the same second.
        write_pair(dir.path(), "second-and-longer.example");
        let serving = r.reload_if_changed().expect("changed").expect("valid");
        assert!(serving.contains("expires"), "{serving}");
        assert!(
            !Arc::ptr_eq(&first, &r.current.load_full()),
            "the new pair serves"
        );
        let second = r.current.load_full();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        )
        .expect("garbage");
        let err = r
            .reload_if_changed()
            .expect("changed")
            .expect_err("refused");
        assert!(err.to_string().contains("key.pem"), "{err}");
        assert!(
            Arc::ptr_eq(&second, &r.current.load_full()),
            "the old pair keeps serving"
        );
    }

    #[test]
    fn a_key_from_another_pair_is_refused() {
        let a = tempfile::tempdir().expect("dir");
        let b = tempfile::tempdir().expect("dir");
        write_pair(a.path(), "a.example");
        write_pair(b.path(), "b.example");
        let err = certified_key(&a.path().join("cert.pem"), &b.path().join("key.pem"))
            .expect_err("mismatch");
        assert!(err.to_string().contains("do not belong together"), "{err}");
    }

    #[test]
    fn upstream_tls_refuses_an_empty_sni_and_loads_a_ca() {
        assert!(UpstreamTls::load("", None, None).is_err());
        assert!(UpstreamTls::load("bad name!", None, None).is_err());
        let dir = tempfile::tempdir().expect("dir");
        write_pair(dir.path(), "ca.example");
        let t = UpstreamTls::load("orders.internal", Some(&dir.path().join("cert.pem")), None)
            .expect("loads");
        assert_eq!(t.ca.as_ref().map(|c| c.len()), Some(1));
        assert!(t.client.is_none());
        // Connections are keyed by everything that made them.
        let again = UpstreamTls::load("orders.internal", Some(&dir.path().join("cert.pem")), None)
            .expect("loads");
        assert_eq!(t.identity, again.identity, "same files, same key");
        let system_roots = UpstreamTls::load("orders.internal", None, None).expect("loads");
        assert_ne!(t.identity, system_roots.identity);
        let other_sni =
            UpstreamTls::load("other.internal", Some(&dir.path().join("cert.pem")), None)
                .expect("loads");
        assert_ne!(t.identity, other_sni.identity);
        let other = tempfile::tempdir().expect("dir");
        write_pair(other.path(), "ca.example");
        let other_ca = UpstreamTls::load(
            "orders.internal",
            Some(&other.path().join("cert.pem")),
            None,
        )
        .expect("loads");
        assert_ne!(t.identity, other_ca.identity, "another CA, another pool");
        let t = UpstreamTls::load(
            "orders.internal",
            None,
            Some((&dir.path().join("cert.pem"), &dir.path().join("key.pem"))),
        )
        .expect("client pair");
        assert!(t.client.is_some());
        assert_ne!(
            t.identity, system_roots.identity,
            "a client certificate, another pool"
        );
    }
}
