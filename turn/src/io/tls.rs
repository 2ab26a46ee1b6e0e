//! The TLS side of TURN over TLS (RFC 8656 §3.1): rustls with the ring provider, TLS 1.2 and
//! 1.3, and a certificate that can be replaced while the relay runs.
//!
//! [`TlsCertificate`] is the handle the daemon keeps: [`TlsCertificate::reload`] reads the
//! files again and, only if they load and the key matches the certificate, swaps them in. New
//! handshakes present the new certificate; established sessions (and their allocations) are
//! untouched, since a session never looks at the certificate again after its handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {path}: {error}")]
    Certificate {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot read the private key {path}: {error}")]
    Key {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    #[error("the key {key} does not fit the certificate {cert}: {error}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        error: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The relay's certificate and key, replaceable at run time.
#[derive(Clone)]
pub struct TlsCertificate {
    resolver: Arc<Resolver>,
    config: Arc<ServerConfig>,
}

impl TlsCertificate {
    /// Loads a PEM certificate chain (end entity first) and its PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsCertificate, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = load_pair(&provider, cert, key)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(certified)),
            paths: (cert.to_owned(), key.to_owned()),
        });
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        Ok(TlsCertificate {
            resolver,
            config: Arc::new(config),
        })
    }

    /// Reads the same files again; on success new handshakes present what they now hold. On
    /// failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cert, key) = &self.resolver.paths;
        let certified = load_pair(self.config.crypto_provider(), cert, key)?;
        let mut current = self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(certified);
        Ok(())
    }

    /// The end-entity certificate in use (DER).
    pub fn end_entity(&self) -> CertificateDer<'static> {
        self.resolver.current().cert[0].clone()
    }

    /// The SHA-256 fingerprint of the certificate in use, as `openssl x509 -fingerprint
    /// -sha256` prints it (`AB:CD:…`), for the log.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.end_entity())
    }

    pub(super) fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("cert", &self.resolver.paths.0)
            .finish_non_exhaustive()
    }
}

fn load_pair(
    provider: &rustls::crypto::CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Certificate {
            path: cert.to_owned(),
            error,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Key {
        path: key.to_owned(),
        error,
    })?;
    CertifiedKey::from_der(chain, der, provider).map_err(|error| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        error,
    })
}

/// Hands every handshake the certificate in force at that moment.
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
    paths: (PathBuf, PathBuf),
}

impl Resolver {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("cert", &self.paths.0)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The SHA-256 fingerprint of a DER certificate, colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}
