//! One TLS client setup for every outgoing connection (Home Assistant, InfluxDB, MQTT).
//!
//! rustls on the `ring` provider (no C toolchain, one provider for all
//! crates); trusted roots: the bundled web roots, the system's trust store
//! (read once per process; a store that cannot be read is a WARN, not fatal)
//! and an optional extra CA file; a verifier that skips certificate checks only
//! when `insecure_skip_verify` is set.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::config::tls::{MqttTlsConfig, TlsConfig};

/// Why a TLS client could not be set up; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    /// The config key at fault (`influxdb.tls.ca_file`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Builds a client config; `section` (`homeassistant`, `influxdb`) prefixes keys in errors and warnings.
pub fn client_config(tls: &TlsConfig, section: &str) -> Result<rustls::ClientConfig, TlsError> {
    Ok(verifying_builder(tls, section)?.with_no_client_auth())
}

/// As [`client_config`], presenting the client certificate in `cert_file` (PEM, with its
/// private key in `key_file`) when both are given: for MQTT brokers that require one.
pub fn client_config_with_cert(
    tls: &TlsConfig,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    section: &str,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = verifying_builder(tls, section)?;
    let (Some(cert_file), Some(key_file)) = (cert_file, key_file) else {
        return Ok(builder.with_no_client_auth());
    };
    let error = |key: &str, message: String| TlsError {
        key: format!("{section}.tls.{key}"),
        message,
    };
    let pem = std::fs::read(cert_file).map_err(|e| {
        error(
            "cert_file",
            format!("cannot read {}: {e}", cert_file.display()),
        )
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            error(
                "cert_file",
                format!("invalid PEM in {}: {e}", cert_file.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(error(
            "cert_file",
            format!("no PEM certificate found in {}", cert_file.display()),
        ));
    }
    let pem = std::fs::read(key_file).map_err(|e| {
        error(
            "key_file",
            format!("cannot read {}: {e}", key_file.display()),
        )
    })?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| {
            error(
                "key_file",
                format!("invalid PEM in {}: {e}", key_file.display()),
            )
        })?
        .ok_or_else(|| {
            error(
                "key_file",
                format!("no private key found in {}", key_file.display()),
            )
        })?;
    builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| error("cert_file", format!("unusable client certificate: {e}")))
}

/// [`client_config_with_cert`] from a `tls` table with a client certificate (MQTT brokers, notifiers).
pub fn client_config_for(
    tls: &MqttTlsConfig,
    section: &str,
) -> Result<rustls::ClientConfig, TlsError> {
    client_config_with_cert(
        &TlsConfig {
            ca_file: tls.ca_file.clone(),
            insecure_skip_verify: tls.insecure_skip_verify,
        },
        tls.cert_file.as_deref(),
        tls.key_file.as_deref(),
        section,
    )
}

/// The part both builders share: provider, protocol versions and the server certificate check.
fn verifying_builder(
    tls: &TlsConfig,
    section: &str,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, TlsError>
{
    let error = |key: &str, message: String| TlsError {
        key: format!("{section}.tls.{key}"),
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error("provider", e.to_string()))?;
    if tls.insecure_skip_verify {
        tracing::warn!(
            message = "TLS certificate verification is disabled; use only for testing.",
            setting = format!("{section}.tls.insecure_skip_verify"),
        );
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateVerification(provider))));
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // The system's store (a private CA the administrator installed); unusable ones are skipped.
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = &tls.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| error("ca_file", format!("cannot read {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert
                .map_err(|e| error("ca_file", format!("invalid PEM in {}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| {
                error(
                    "ca_file",
                    format!("unusable certificate in {}: {e}", path.display()),
                )
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(error(
                "ca_file",
                format!("no PEM certificate found in {}", path.display()),
            ));
        }
    }
    Ok(builder.with_root_certificates(roots))
}

/// The system's trusted certificates, read once per process (`rustls-native-certs`:
/// the OpenSSL locations on Linux, honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`).
/// Errors are logged at WARN and the certificates that could be read are kept.
pub fn system_roots() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in loaded.errors.iter().take(5) {
            tracing::warn!(
                message = "Cannot read part of the system's trusted certificates; the bundled web roots and any ca_file still apply.",
                %error
            );
        }
        tracing::debug!(
            message = "System trusted certificates read.",
            certificates = loaded.certs.len()
        );
        loaded.certs
    })
}

/// Accepts any certificate but still checks handshake signatures; only behind `insecure_skip_verify`.
#[derive(Debug)]
struct NoCertificateVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(
            &TlsConfig {
                ca_file: Some(empty),
                insecure_skip_verify: false,
            },
            "influxdb",
        )
        .unwrap_err();
        assert_eq!(err.key, "influxdb.tls.ca_file");
        assert!(err.message.contains("no PEM certificate"), "{err}");
        let missing = client_config(
            &TlsConfig {
                ca_file: Some(dir.path().join("missing.pem")),
                insecure_skip_verify: false,
            },
            "homeassistant",
        )
        .unwrap_err();
        assert_eq!(missing.key, "homeassistant.tls.ca_file");
        assert!(client_config(&TlsConfig::default(), "influxdb").is_ok());
    }
}
