//! The cluster CA, the leaf certificates it issues, CSRs and who a certificate names.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate, X509CertificationRequest};

use crate::files::{self, CERT_MODE, KEY_MODE};
use crate::subject;
use crate::tls::certs_from_pem;
use crate::{Error, Result};

/// How long the cluster CA is valid.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Certificates start an hour in the past so that machines whose clocks lag still accept them.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// The cluster CA: signs every serving, peer, node and client certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    /// The CA certificate, PEM; what clients trust and what the token's CA hash pins.
    pub cert_pem: String,
    /// The CA's private key, PEM (PKCS#8); only control-plane members hold it.
    pub key_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("hash", &self.hash())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Generates a new self-signed CA: ECDSA P-256, subject `CN=<common_name>, O=skiff`, valid
    /// for 10 years.
    pub fn generate(common_name: &str) -> Result<Ca> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name, &["skiff".to_owned()]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_DAYS);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(Error::certificate("self-sign the CA certificate"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads `dir/ca.crt` and `dir/ca.key`, checking that the key belongs to the certificate.
    pub fn load(dir: &Path) -> Result<Ca> {
        let pair = load_pair(dir, "ca")?;
        Ok(Ca {
            cert_pem: pair.cert_pem,
            key_pem: pair.key_pem,
        })
    }

    /// Saves `dir/ca.crt` (0644) and `dir/ca.key` (0600) atomically and durably; `dir` becomes
    /// 0700.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_pair(dir, "ca", &self.cert_pem, &self.key_pem)
    }

    /// Issues a fresh ECDSA P-256 key and a certificate for it described by `request`.
    pub fn issue(&self, request: &Issue) -> Result<KeyPair> {
        let key = new_key()?;
        let cert_pem = self.sign(&key, request)?;
        Ok(KeyPair {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs the public key of `csr_pem` and returns the certificate, PEM.
    ///
    /// Only the CSR's public key is used (after checking its self-signature, which proves the
    /// requester holds the private key): subject, SANs, usages and validity all come from
    /// `request`, so a requester cannot name itself `system:masters`.
    pub fn sign_csr(&self, csr_pem: &str, request: &Issue) -> Result<String> {
        let public_key = csr_public_key(csr_pem)?;
        self.sign(&public_key, request)
    }

    /// The k3s-style hash of the CA certificate, as carried by join tokens.
    pub fn hash(&self) -> String {
        ca_hash(&self.cert_pem)
    }

    fn sign(&self, public_key: &impl PublicKeyData, request: &Issue) -> Result<String> {
        let ca_key = rcgen::KeyPair::from_pem(&self.key_pem)
            .map_err(Error::certificate("parse the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)
            .map_err(Error::certificate("parse the CA certificate"))?;
        let params = request.to_params()?;
        let cert = params
            .signed_by(public_key, &issuer)
            .map_err(Error::certificate(format!(
                "sign the certificate for {:?}",
                request.common_name
            )))?;
        if request.organizations.len() > 1 {
            let subject = subject::name_der(&request.common_name, &request.organizations);
            return subject::replace_subject(cert.der(), &subject, issuer.key());
        }
        Ok(cert.pem())
    }
}

/// What a leaf certificate says: who it names, where it may serve and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Subject CN; for client certificates this is the user name (`system:node:<name>`).
    pub common_name: String,
    /// Subject O values; for client certificates these are the groups (`system:masters`).
    pub organizations: Vec<String>,
    /// DNS subject alternative names a server certificate is valid for.
    pub dns_names: Vec<String>,
    /// IP subject alternative names a server certificate is valid for.
    pub ips: Vec<IpAddr>,
    /// Whether the certificate serves TLS, authenticates a client, or both.
    pub usage: Usage,
    /// How long the certificate is valid, counted from now.
    pub validity_days: u32,
}

impl Issue {
    fn to_params(&self) -> Result<CertificateParams> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&self.common_name, &self.organizations);
        for dns_name in &self.dns_names {
            let ia5 = dns_name
                .clone()
                .try_into()
                .map_err(|source| Error::Certificate {
                    action: format!("use {dns_name:?} as a DNS name"),
                    source,
                })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(self.ips.iter().copied().map(SanType::IpAddress));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match self.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, i64::from(self.validity_days));
        params.serial_number = Some(random_serial());
        Ok(params)
    }
}

/// What a leaf certificate may be used for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server only (API serving certificate).
    Server,
    /// TLS client only (admin, kubelet-client).
    Client,
    /// Both (Raft peers and nodes, which dial and are dialled).
    ServerAndClient,
}

/// A leaf certificate and its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").finish_non_exhaustive()
    }
}

impl KeyPair {
    /// Loads `dir/<name>.crt` and `dir/<name>.key`, checking that the key belongs to the
    /// certificate.
    pub fn load(dir: &Path, name: &str) -> Result<KeyPair> {
        load_pair(dir, name)
    }

    /// Saves `dir/<name>.crt` (0644) and `dir/<name>.key` (0600) atomically and durably; `dir`
    /// becomes 0700.
    pub fn save(&self, dir: &Path, name: &str) -> Result<()> {
        save_pair(dir, name, &self.cert_pem, &self.key_pem)
    }
}

/// Generates an ECDSA P-256 key and a CSR for it naming `CN=<common_name>` and `O=<each of
/// organizations>`; returns `(csr_pem, key_pem)`.
///
/// The CA ignores the CSR's subject (see [`Ca::sign_csr`]); it is filled in for the logs, and
/// holds only the last of several organizations (an rcgen limit that certificates the CA
/// issues do not have).
pub fn generate_csr(common_name: &str, organizations: &[String]) -> Result<(String, String)> {
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name, organizations);
    let csr = params
        .serialize_request(&key)
        .map_err(Error::certificate("build the certificate signing request"))?;
    let csr_pem = csr
        .pem()
        .map_err(Error::certificate("encode the certificate signing request"))?;
    Ok((csr_pem, key.serialize_pem()))
}

/// The hex SHA-256 of the CA's PEM bytes exactly as served (k3s style), 64 characters.
pub fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

/// Who a client certificate names: the user and groups Kubernetes derives from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject's first CN.
    pub user: String,
    /// Every subject O, in order.
    pub groups: Vec<String>,
}

/// Reads the user (first CN) and groups (all O values) from a DER certificate, as rustls
/// hands out peer certificates.
///
/// It does not verify the certificate: rustls did that during the handshake.
pub fn identity_of(cert_der: &[u8]) -> Result<Identity> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|error| Error::invalid("certificate", error))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .ok_or_else(|| Error::invalid("certificate", "the subject has no common name"))?
        .as_str()
        .map_err(|error| Error::invalid("certificate common name", error))?
        .to_owned();
    let groups = subject
        .iter_organization()
        .map(|organization| {
            organization
                .as_str()
                .map(str::to_owned)
                .map_err(|error| Error::invalid("certificate organization", error))
        })
        .collect::<Result<_>>()?;
    Ok(Identity { user, groups })
}

fn new_key() -> Result<rcgen::KeyPair> {
    rcgen::KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(Error::certificate("generate an ECDSA P-256 key"))
}

fn distinguished_name(common_name: &str, organizations: &[String]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    // rcgen keeps one value per type; `Ca::sign` rewrites the subject when there are more.
    for organization in organizations {
        name.push(DnType::OrganizationName, organization.as_str());
    }
    name
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + Duration::days(days);
}

/// A random positive 128-bit serial: RFC 5280 wants serials unique per CA, and rcgen would
/// otherwise derive one from the public key, repeating it when a key is re-certified.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    // Clear the sign bit and keep the first byte non-zero so the DER INTEGER stays 16 bytes
    // and positive.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// The public key of a CSR whose self-signature checks out.
///
/// The CSR is parsed with x509-parser rather than rcgen's `CertificateSigningRequestParams`,
/// which rejects CSRs carrying extensions it does not model even though we ignore them all.
fn csr_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo> {
    const WHAT: &str = "certificate signing request";
    let der =
        CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|error| {
            Error::invalid(
                WHAT,
                format!("expected a PEM CERTIFICATE REQUEST block ({error})"),
            )
        })?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|error| Error::invalid(WHAT, error))?;
    csr.verify_signature().map_err(|error| {
        Error::invalid(WHAT, format!("its signature does not verify ({error})"))
    })?;
    SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|error| Error::invalid(WHAT, format!("unsupported public key ({error})")))
}

fn load_pair(dir: &Path, name: &str) -> Result<KeyPair> {
    let cert_name = format!("{name}.crt");
    let key_name = format!("{name}.key");
    let cert_pem = files::read(dir, &cert_name)?;
    let key_pem = files::read(dir, &key_name)?;
    let cert_path = dir.join(&cert_name);
    let key_path = dir.join(&key_name);
    let certs = certs_from_pem(&cert_pem)
        .map_err(|_| Error::invalid(cert_path.display().to_string(), "no PEM certificate"))?;
    let leaf: &CertificateDer<'_> = certs
        .first()
        .ok_or_else(|| Error::invalid(cert_path.display().to_string(), "no PEM certificate"))?;
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|error| Error::invalid(cert_path.display().to_string(), error))?;
    let key = rcgen::KeyPair::from_pem(&key_pem)
        .map_err(|error| Error::invalid(key_path.display().to_string(), error))?;
    if cert.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
        return Err(Error::KeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }
    Ok(KeyPair { cert_pem, key_pem })
}

fn save_pair(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
    files::create_private_dir(dir)?;
    // The key first: a crash in between leaves a mismatched pair, which `load` reports,
    // rather than a certificate without a key.
    files::write_atomic(dir, &format!("{name}.key"), key_pem.as_bytes(), KEY_MODE)?;
    files::write_atomic(dir, &format!("{name}.crt"), cert_pem.as_bytes(), CERT_MODE)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use base64::Engine;

    use super::*;

    fn issue(common_name: &str, organizations: &[&str], usage: Usage) -> Issue {
        Issue {
            common_name: common_name.to_owned(),
            organizations: organizations.iter().map(|&o| o.to_owned()).collect(),
            dns_names: vec!["localhost".to_owned()],
            ips: vec!["127.0.0.1".parse().unwrap()],
            usage,
            validity_days: 365,
        }
    }

    fn parse_leaf(cert_pem: &str) -> Vec<u8> {
        certs_from_pem(cert_pem).unwrap()[0].to_vec()
    }

    #[test]
    fn ca_is_a_ten_year_p256_ca_named_as_asked() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let der = parse_leaf(&ca.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(
            identity_of(&der).unwrap(),
            Identity {
                user: "skiff-ca".to_owned(),
                groups: vec!["skiff".to_owned()]
            }
        );
        let validity = cert.validity();
        let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
        assert_eq!(
            days, 3650,
            "10 years counted from now, plus the hour of skew"
        );
        assert!(validity.not_before.timestamp() < OffsetDateTime::now_utc().unix_timestamp());
        assert!(ca.key_pem.contains("PRIVATE KEY"));
        assert_eq!(ca.hash(), ca_hash(&ca.cert_pem));
    }

    #[test]
    fn issued_certificates_carry_the_request_and_chain_to_the_ca() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let pair = ca
            .issue(&issue(
                "system:node:a",
                &["system:nodes", "extra"],
                Usage::ServerAndClient,
            ))
            .unwrap();
        let der = parse_leaf(&pair.cert_pem);
        assert_eq!(
            identity_of(&der).unwrap(),
            Identity {
                user: "system:node:a".to_owned(),
                groups: vec!["system:nodes".to_owned(), "extra".to_owned()]
            }
        );
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let ca_der = parse_leaf(&ca.cert_pem);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        use x509_parser::extensions::GeneralName;
        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(
            sans,
            &[
                GeneralName::DNSName("localhost"),
                GeneralName::IPAddress(&[127, 0, 0, 1])
            ]
        );

        // Two certificates for the same request get different serials.
        let other = ca
            .issue(&issue("system:node:a", &[], Usage::Client))
            .unwrap();
        let other_der = parse_leaf(&other.cert_pem);
        let (_, other_cert) = X509Certificate::from_der(&other_der).unwrap();
        assert_ne!(cert.serial, other_cert.serial);
        let eku = other_cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn sign_csr_takes_only_the_public_key_from_the_csr() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let (csr_pem, key_pem) =
            generate_csr("system:masters-wannabe", &["system:masters".to_owned()]).unwrap();
        let cert_pem = ca
            .sign_csr(
                &csr_pem,
                &issue("system:node:a", &["system:nodes"], Usage::Client),
            )
            .unwrap();
        assert_eq!(
            identity_of(&parse_leaf(&cert_pem)).unwrap(),
            Identity {
                user: "system:node:a".to_owned(),
                groups: vec!["system:nodes".to_owned()]
            }
        );
        // The certificate is for the CSR's key, so the requester can use it.
        let dir = tempfile::tempdir().unwrap();
        KeyPair { cert_pem, key_pem }
            .save(dir.path(), "node")
            .unwrap();
        KeyPair::load(dir.path(), "node").unwrap();
    }

    #[test]
    fn sign_csr_rejects_garbage_and_forged_csrs() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let request = issue("system:node:a", &[], Usage::Client);
        let error = ca.sign_csr("not a csr", &request).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid certificate signing request"),
            "{error}"
        );

        // Change the subject after signing: the self-signature no longer verifies.
        let (csr_pem, _) = generate_csr("flipme", &[]).unwrap();
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let name_at = der
            .windows(6)
            .position(|window| window == b"flipme")
            .unwrap();
        der[name_at] = b'F';
        let forged_pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        let error = ca.sign_csr(&forged_pem, &request).unwrap_err().to_string();
        assert!(error.contains("signature does not verify"), "{error}");
    }

    #[test]
    fn save_and_load_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("data/pki");
        let ca = Ca::generate("skiff-ca").unwrap();
        ca.save(&pki).unwrap();
        // Saving again replaces the files in place.
        ca.save(&pki).unwrap();
        assert_eq!(Ca::load(&pki).unwrap(), ca);
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki.join("ca.key")), 0o600);
        assert_eq!(mode(&pki.join("ca.crt")), 0o644);
        assert_eq!(mode(&pki), 0o700);
        let leftovers: Vec<_> = std::fs::read_dir(&pki)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");

        let pair = ca
            .issue(&issue("skiff-admin", &["system:masters"], Usage::Client))
            .unwrap();
        pair.save(&pki, "admin").unwrap();
        assert_eq!(KeyPair::load(&pki, "admin").unwrap(), pair);
        assert_eq!(mode(&pki.join("admin.key")), 0o600);
    }

    #[test]
    fn load_reports_a_missing_file_and_a_key_of_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let error = Ca::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.starts_with("failed to read ") && error.ends_with("ca.crt"),
            "{error}"
        );

        let ca = Ca::generate("skiff-ca").unwrap();
        let other = Ca::generate("skiff-ca").unwrap();
        Ca {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem,
        }
        .save(dir.path())
        .unwrap();
        let error = Ca::load(dir.path()).unwrap_err();
        assert!(matches!(error, Error::KeyMismatch { .. }), "{error}");
    }

    #[test]
    fn ca_hash_is_the_hex_sha256_of_the_pem_bytes() {
        let hash = ca_hash("hello\n");
        assert_eq!(
            hash,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(ca_hash("hello\n"), hash);
        assert_ne!(ca_hash("hello"), hash);
    }

    #[test]
    fn debug_does_not_print_private_keys() {
        let ca = Ca::generate("skiff-ca").unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
        let pair = ca.issue(&issue("a", &[], Usage::Client)).unwrap();
        assert!(!format!("{pair:?}").contains("PRIVATE"));
    }
}
