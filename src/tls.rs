//! TLS client settings shared by the IMAP source (tokio-rustls) and described the same way to
//! the SMTP sender (lettre): the system's trusted roots, plus an optional CA file
//! (`tls.ca_file`), and certificate checks that are only switched off by
//! `tls.accept_invalid_certs = true`.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Reads every certificate of a PEM file (the CA file of `tls.ca_file`).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.ca_file {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.ca_file {}: holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls client configuration for IMAP: system roots plus `ca_file`, or no checks at all
/// when `accept_invalid_certs`.
pub fn client_config(
    ca_file: Option<&Path>,
    accept_invalid_certs: bool,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let extra = match ca_file {
            Some(p) => read_ca_file(p)?,
            None => Vec::new(),
        };
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider)
            .map_err(|e| format!("TLS setup: cannot load the trusted roots: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Explains a TLS handshake failure in words an admin can act on.
pub fn explain_handshake_error(e: &std::io::Error, host: &str) -> String {
    let inner = e.get_ref().map(|i| i.to_string()).unwrap_or_default();
    let text = if inner.is_empty() {
        e.to_string()
    } else {
        inner
    };
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        format!(
            "TLS: the certificate of {host} is not trusted ({text}); add its CA with tls.ca_file, or (not advised) set tls.accept_invalid_certs = true"
        )
    } else {
        format!("TLS handshake with {host} failed: {text}")
    }
}

/// `tls.accept_invalid_certs = true`: checks signatures only, trusts any certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
