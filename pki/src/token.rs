//! Join and bearer tokens in k3s form: `K10<ca hash>::<id>.<secret>`.

use std::fmt;

use rand::Rng;

use crate::{Error, Result};

/// Characters of token ids and secrets (kubeadm bootstrap tokens: `[a-z0-9]`).
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const CA_HASH_LEN: usize = 64;
const FORMAT: &str = "token must look like K10<ca-hash>::<id>.<secret> or <id>.<secret>";

/// A join or bearer token. The secret is redacted from `Debug`; `Display` prints it whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Hex SHA-256 of the CA PEM a joiner pins ([`crate::ca_hash`]); `None` for a bare
    /// `<id>.<secret>` bearer token.
    pub ca_hash: Option<String>,
    /// Public part, `[a-z0-9]{6}`: names the Secret that stores the token.
    pub id: String,
    /// Private part, `[a-z0-9]{16}`.
    pub secret: String,
}

impl Token {
    /// A new random token pinning `ca_hash`.
    pub fn generate(ca_hash: &str) -> Token {
        Token {
            ca_hash: Some(ca_hash.to_owned()),
            id: random_string(ID_LEN),
            secret: random_string(SECRET_LEN),
        }
    }

    /// Parses `K10<ca hash>::<id>.<secret>` or a bare `<id>.<secret>`; surrounding whitespace
    /// (a token file's newline) is ignored. Errors say what is wrong.
    pub fn parse(text: &str) -> Result<Token> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::InvalidToken(format!("{FORMAT}, but it is empty")));
        }
        let (ca_hash, credentials) = match text.strip_prefix("K10") {
            Some(rest) => {
                let Some((hash, credentials)) = rest.split_once("::") else {
                    return Err(Error::InvalidToken(format!(
                        "{FORMAT}: \"::\" is missing after the CA hash"
                    )));
                };
                check_ca_hash(hash)?;
                (Some(hash.to_ascii_lowercase()), credentials)
            }
            None if text.contains("::") => {
                return Err(Error::InvalidToken(format!(
                    "{FORMAT}: a token with a CA hash must start with K10"
                )));
            }
            None => (None, text),
        };
        if let Some((user, _)) = credentials.split_once(':') {
            return Err(Error::InvalidToken(format!(
                "{FORMAT}: the k3s `{user}:<password>` form is not supported; create a token \
                 with `skiff-control-plane token create`"
            )));
        }
        let Some((id, secret)) = credentials.split_once('.') else {
            return Err(Error::InvalidToken(format!(
                "{FORMAT}: \".\" between id and secret is missing"
            )));
        };
        check_part("id", id, ID_LEN)?;
        check_part("secret", secret, SECRET_LEN)?;
        Ok(Token {
            ca_hash,
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// `<id>.<secret>`: what goes after `Authorization: Bearer`.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl fmt::Display for Token {
    /// The full `K10<ca hash>::<id>.<secret>` form when the CA hash is known, else the bearer
    /// form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ca_hash {
            Some(ca_hash) => write!(f, "K10{ca_hash}::{}.{}", self.id, self.secret),
            None => write!(f, "{}.{}", self.id, self.secret),
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ca_hash", &self.ca_hash)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn random_string(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn check_ca_hash(hash: &str) -> Result<()> {
    if hash.len() != CA_HASH_LEN || !hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(Error::InvalidToken(format!(
            "{FORMAT}: the CA hash must be {CA_HASH_LEN} hex characters, got {hash:?}"
        )));
    }
    Ok(())
}

fn check_part(name: &str, value: &str, len: usize) -> Result<()> {
    if value.len() != len || !value.bytes().all(|byte| ALPHABET.contains(&byte)) {
        return Err(Error::InvalidToken(format!(
            "{FORMAT}: the {name} must be {len} characters of [a-z0-9]"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    #[test]
    fn generated_tokens_round_trip_in_both_forms() {
        let token = Token::generate(HASH);
        assert_eq!(token.id.len(), 6);
        assert_eq!(token.secret.len(), 16);
        assert!(
            token
                .bearer()
                .bytes()
                .all(|byte| byte == b'.' || ALPHABET.contains(&byte))
        );
        let full = token.to_string();
        assert!(full.starts_with(&format!("K10{HASH}::")));
        assert_eq!(Token::parse(&full).unwrap(), token);
        assert_eq!(Token::parse(&format!("{full}\n")).unwrap(), token);

        let bearer = Token::parse(&token.bearer()).unwrap();
        assert_eq!(bearer.ca_hash, None);
        assert_eq!(
            (bearer.id.as_str(), bearer.secret.as_str()),
            (token.id.as_str(), token.secret.as_str())
        );
        assert_eq!(bearer.to_string(), token.bearer());
        assert_ne!(Token::generate(HASH), token);
    }

    #[test]
    fn debug_redacts_the_secret() {
        let token = Token::generate(HASH);
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[track_caller]
    fn check_rejected(text: &str, expected_reason: &str) {
        let message = Token::parse(text).unwrap_err().to_string();
        assert!(message.starts_with(FORMAT), "{text:?}: {message}");
        assert!(message.contains(expected_reason), "{text:?}: {message}");
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        check_rejected("", "empty");
        check_rejected("  \n", "empty");
        check_rejected(
            &format!("K10{HASH}::server:hunter2"),
            "`server:<password>` form",
        );
        check_rejected(
            &format!("K10{HASH}::node:hunter2"),
            "`node:<password>` form",
        );
        check_rejected(
            &format!("K10{HASH}abcdef.0123456789abcdef"),
            "\"::\" is missing",
        );
        check_rejected("K10abc::abcdef.0123456789abcdef", "64 hex characters");
        check_rejected(
            &format!("K10{}::abcdef.0123456789abcdef", "g".repeat(64)),
            "64 hex",
        );
        check_rejected(
            &format!("{HASH}::abcdef.0123456789abcdef"),
            "must start with K10",
        );
        check_rejected(&format!("K10{HASH}::abcdef0123456789abcdef"), "\".\"");
        check_rejected("abcdef", "\".\"");
        check_rejected("abcde.0123456789abcdef", "the id must be 6");
        check_rejected("ABCDEF.0123456789abcdef", "the id must be 6");
        check_rejected("abcdef.0123456789abcde", "the secret must be 16");
        check_rejected("abcdef.0123456789abcdeF", "the secret must be 16");
        check_rejected("abcdef.0123456789abcdef.x", "the secret must be 16");
    }

    #[test]
    fn an_uppercase_ca_hash_is_accepted_and_normalized() {
        let token = Token::parse(&format!(
            "K10{}::abcdef.0123456789abcdef",
            HASH.to_uppercase()
        ))
        .unwrap();
        assert_eq!(token.ca_hash.as_deref(), Some(HASH));
    }
}
