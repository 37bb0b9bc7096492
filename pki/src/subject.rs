//! Subjects with several organizations, which rcgen cannot write.
//!
//! rcgen's `DistinguishedName` holds one value per attribute type, but Kubernetes reads every
//! O of a client certificate as a group. So for several organizations the certificate rcgen
//! signed gets its subject replaced (one RDN per value, as Go's `pkix.Name` writes them) and
//! its to-be-signed part signed again with the CA key. Only the outer lengths change; every
//! other byte stays rcgen's.

use base64::Engine;
use rcgen::SigningKey;

use crate::{Error, Result};

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const BIT_STRING: u8 = 0x03;
/// The `[0] EXPLICIT Version` that opens a v3 TBSCertificate.
const VERSION_TAG: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3, as OID content bytes.
const COMMON_NAME_OID: [u8; 3] = [0x55, 0x04, 0x03];
/// id-at-organizationName, 2.5.4.10, as OID content bytes.
const ORGANIZATION_OID: [u8; 3] = [0x55, 0x04, 0x0a];

/// The DER `Name` `CN=<common_name>, O=<organizations[0]>, O=<organizations[1]>, ...`.
pub(crate) fn name_der(common_name: &str, organizations: &[String]) -> Vec<u8> {
    let mut rdns = attribute(&COMMON_NAME_OID, common_name);
    for organization in organizations {
        rdns.extend(attribute(&ORGANIZATION_OID, organization));
    }
    tlv(SEQUENCE, &rdns)
}

/// Replaces the subject of `cert_der` by `subject_der` and signs it again with `signer`,
/// returning the new certificate as PEM.
pub(crate) fn replace_subject(
    cert_der: &[u8],
    subject_der: &[u8],
    signer: &impl SigningKey,
) -> Result<String> {
    let malformed = || Error::invalid("certificate built by rcgen", "unexpected DER layout");
    let sequence_content = |der| match split_tlv(der) {
        Some((tlv, _)) if tlv.tag == SEQUENCE => Some(tlv.content),
        _ => None,
    };
    let certificate = sequence_content(cert_der).ok_or_else(malformed)?;
    let elements = split_all(certificate).ok_or_else(malformed)?;
    let [tbs, signature_algorithm, _signature] = elements.as_slice() else {
        return Err(malformed());
    };
    let tbs_content = sequence_content(tbs).ok_or_else(malformed)?;
    let mut tbs_elements = split_all(tbs_content).ok_or_else(malformed)?;
    // version?, serialNumber, signature, issuer, validity, subject, ...
    let subject_index = if tbs_content.first() == Some(&VERSION_TAG) {
        5
    } else {
        4
    };
    let subject = tbs_elements.get_mut(subject_index).ok_or_else(malformed)?;
    if subject.first() != Some(&SEQUENCE) {
        return Err(malformed());
    }
    *subject = subject_der;
    let new_tbs = tlv(SEQUENCE, &tbs_elements.concat());
    let signature = signer
        .sign(&new_tbs)
        .map_err(Error::certificate("sign the certificate again"))?;
    let mut signature_bits = vec![0u8]; // no unused bits
    signature_bits.extend(signature);
    let new_cert = tlv(
        SEQUENCE,
        &[
            new_tbs.as_slice(),
            signature_algorithm,
            &tlv(BIT_STRING, &signature_bits),
        ]
        .concat(),
    );
    Ok(certificate_pem(&new_cert))
}

fn certificate_pem(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    // Base64 is ASCII, so 64-byte chunks are whole characters.
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
    let pair = [tlv(OID, oid), tlv(UTF8_STRING, value.as_bytes())].concat();
    tlv(SET, &tlv(SEQUENCE, &pair))
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&byte| byte == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// One DER element.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    /// Header and content.
    whole: &'a [u8],
}

/// Splits the first element off `input`, returning it and the rest.
fn split_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first_len, rest) = rest.split_first()?;
    let (len, rest) = if first_len < 0x80 {
        (usize::from(first_len), rest)
    } else {
        let n_len_bytes = usize::from(first_len & 0x7f);
        if n_len_bytes == 0 || n_len_bytes > size_of::<usize>() {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(n_len_bytes)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, rest)
    };
    let (content, after) = rest.split_at_checked(len)?;
    let header_len = input.len() - rest.len();
    let tlv = Tlv {
        tag,
        content,
        whole: &input[..header_len + len],
    };
    Some((tlv, after))
}

/// Every TLV in `input`, each whole (header included).
fn split_all(mut input: &[u8]) -> Option<Vec<&[u8]>> {
    let mut elements = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = split_tlv(input)?;
        elements.push(tlv.whole);
        input = rest;
    }
    Some(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip_in_short_and_long_form() {
        for len in [0, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let encoded = tlv(SEQUENCE, &content);
            let (tlv, rest) = split_tlv(&encoded).unwrap();
            assert_eq!(
                (tlv.tag, tlv.content.len(), tlv.whole.len(), rest.len()),
                (SEQUENCE, len, encoded.len(), 0)
            );
        }
        assert!(split_tlv(&[SEQUENCE, 0x82, 0x01]).is_none());
        assert!(split_tlv(&[SEQUENCE, 0x05, 0x00]).is_none());
    }
}
