//! How the API's certificate is verified: always, against the system's roots, or the
//! CA the admin named instead, and, when a fingerprint is pinned, against that alone.
//!
//! A pin is what Proxmox's own clients do with a node's self-signed certificate
//! (`pvesh`, the storage plugins, `proxmox-backup-client`): the leaf's SHA-256 must
//! match, whatever signed it. A mismatch fails the handshake, so no request (and no
//! token) is sent; the verifier keeps what it saw, so the client reports the expected
//! and the seen fingerprint as a typed error rather than by reading rustls' message.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// A certificate's SHA-256, as `pvenode cert info` prints it: 32 colon-separated bytes
/// in hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

/// Why a fingerprint setting is refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a SHA-256 fingerprint: expected 32 colon-separated hex bytes, as \
     `pvenode cert info` prints them"
)]
pub struct BadFingerprint(pub String);

impl Fingerprint {
    /// Colon-separated hex in either case; the colons may be left out.
    pub fn parse(s: &str) -> Result<Fingerprint, BadFingerprint> {
        let bad = || BadFingerprint(s.to_owned());
        let hex: String = s.trim().chars().filter(|&c| c != ':').collect();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }

    /// The SHA-256 of a DER certificate.
    pub fn of(cert: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(cert).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why no TLS configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the CA file {}", .0.display())]
    CaFile(PathBuf, #[source] rustls::pki_types::pem::Error),
    #[error("the CA file {} holds no certificate", .0.display())]
    EmptyCaFile(PathBuf),
    #[error("the system has no trusted root certificates (set a CA file or a fingerprint)")]
    NoRoots,
    #[error("the certificate verifier")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    #[error("TLS setup")]
    Rustls(#[source] rustls::Error),
}

/// What the verifier saw when a pinned fingerprint did not match.
#[derive(Debug, Default)]
pub struct Mismatch(Mutex<Option<Fingerprint>>);

impl Mismatch {
    /// The fingerprint of the last refused certificate, once.
    pub fn take(&self) -> Option<Fingerprint> {
        self.0.lock().ok().and_then(|mut seen| seen.take())
    }
}

/// The client's TLS configuration, and where a pin mismatch is recorded.
pub fn client_config(
    ca_file: Option<&Path>,
    pin: Option<Fingerprint>,
) -> Result<(Arc<ClientConfig>, Arc<Mismatch>), TlsError> {
    // ring, not aws-lc-rs (which needs cmake and nasm to build); its provider is marked
    // deprecated only for lacking post-quantum key exchange, which Proxmox's pveproxy
    // does not offer either.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match (ca_file, pin) {
        (Some(path), _) => Some(roots_from(path)?),
        // With a pin alone the roots are not consulted.
        (None, Some(_)) => None,
        (None, None) => Some(system_roots()?),
    };
    let chain = roots
        .map(|roots| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(TlsError::Verifier)
        })
        .transpose()?;
    let mismatch = Arc::new(Mismatch::default());
    let verifier = Verifier {
        chain,
        pin,
        provider: provider.clone(),
        mismatch: mismatch.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((Arc::new(config), mismatch))
}

fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| TlsError::CaFile(path.to_owned(), e))?;
    for cert in certs {
        let cert = cert.map_err(|e| TlsError::CaFile(path.to_owned(), e))?;
        // A certificate rustls cannot use as a root is skipped, as the system store's are.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TlsError::EmptyCaFile(path.to_owned()));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("system root certificates: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(roots)
}

/// The chain against the roots, or the leaf against the pin.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    pin: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
    mismatch: Arc<Mismatch>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = self.pin {
            let seen = Fingerprint::of(end_entity);
            if seen == pin {
                return Ok(ServerCertVerified::assertion());
            }
            if let Ok(mut slot) = self.mismatch.0.lock() {
                *slot = Some(seen);
            }
            return Err(rustls::Error::General(format!(
                "certificate fingerprint mismatch: expected {pin}, the server presented {seen}"
            )));
        }
        match &self.chain {
            Some(chain) => {
                chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::General("no roots to verify against".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_either_case_and_print_as_pvenode_does() {
        let upper = "0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9";
        let f = Fingerprint::parse(upper).unwrap();
        assert_eq!(f.to_string(), upper);
        assert_eq!(Fingerprint::parse(&upper.to_lowercase()).unwrap(), f);
        assert_eq!(Fingerprint::parse(&upper.replace(':', "")).unwrap(), f);
        for bad in [
            "",
            "AA:BB",
            &upper[3..],
            &format!("{upper}:00"),
            &upper.replace('0', "g"),
        ] {
            assert!(Fingerprint::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Fingerprint::of(b"").to_string(),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        assert!(matches!(
            client_config(Some(&path), None),
            Err(TlsError::EmptyCaFile(_))
        ));
        assert!(matches!(
            client_config(Some(&dir.path().join("none.pem")), None),
            Err(TlsError::CaFile(..))
        ));
    }
}
