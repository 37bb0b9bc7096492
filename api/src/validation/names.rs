//! Kubernetes' string-format checks (`k8s.io/apimachinery/pkg/util/validation`): each
//! returns the list of problems in Kubernetes' own words, empty when the value is valid.

/// Longest DNS-1123 / DNS-1035 label.
pub const DNS1123_LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest label value and qualified-name name part.
pub const LABEL_VALUE_MAX: usize = 63;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_MAP_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const ENV_VAR_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";

fn max_len(value: &str, max: usize) -> Option<String> {
    (value.len() > max).then(|| format!("must be no more than {max} characters"))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_label_shaped(value: &str, first_ok: fn(u8) -> bool) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            first_ok(first)
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }
        _ => false,
    }
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// RFC 1123 label: namespace, container, and most object names that become DNS labels.
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errors: Vec<String> = max_len(value, DNS1123_LABEL_MAX).into_iter().collect();
    if !is_label_shaped(value, lower_alnum) {
        errors.push(DNS1123_LABEL_MSG.to_owned());
    }
    errors
}

/// RFC 1123 subdomain: the default rule for object names (pods, deployments, nodes).
pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors: Vec<String> = max_len(value, DNS1123_SUBDOMAIN_MAX).into_iter().collect();
    if !value
        .split('.')
        .all(|part| is_label_shaped(part, lower_alnum))
    {
        errors.push(DNS1123_SUBDOMAIN_MSG.to_owned());
    }
    errors
}

/// RFC 1035 label: Service names, which must start with a letter.
pub fn dns1035_label(value: &str) -> Vec<String> {
    let mut errors: Vec<String> = max_len(value, DNS1123_LABEL_MAX).into_iter().collect();
    if !is_label_shaped(value, |b| b.is_ascii_lowercase()) {
        errors.push(DNS1035_LABEL_MSG.to_owned());
    }
    errors
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Qualified name (`example.com/name` or `name`): label keys, annotation keys, finalizers.
pub fn qualified_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let (prefix, name) = match value.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => {
            errors.push(format!("a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
            return errors;
        }
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errors.push("prefix part must be non-empty".to_owned());
        } else {
            errors.extend(
                dns1123_subdomain(prefix)
                    .into_iter()
                    .map(|msg| format!("prefix part {msg}")),
            );
        }
    }
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else {
        if let Some(msg) = max_len(name, LABEL_VALUE_MAX) {
            errors.push(format!("name part {msg}"));
        }
        if !is_qualified_name_part(name) {
            errors.push(format!("name part {QUALIFIED_NAME_MSG}"));
        }
    }
    errors
}

/// Key of a Secret's or ConfigMap's `data` (Kubernetes' `IsConfigMapKey`): usable as a
/// file name in a volume, so `[-._a-zA-Z0-9]+`, not `.` or `..` or starting with `..`.
pub fn config_map_key(value: &str) -> Vec<String> {
    let mut errors: Vec<String> = max_len(value, DNS1123_SUBDOMAIN_MAX).into_iter().collect();
    let shaped = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !shaped {
        errors.push(CONFIG_MAP_KEY_MSG.to_owned());
    }
    if value == "." {
        errors.push("must not be '.'".to_owned());
    } else if value == ".." {
        errors.push("must not be '..'".to_owned());
    } else if value.starts_with("..") {
        errors.push("must not start with '..'".to_owned());
    }
    errors
}

/// Label value: empty, or a qualified-name part of at most 63 characters.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errors: Vec<String> = max_len(value, LABEL_VALUE_MAX).into_iter().collect();
    if !value.is_empty() && !is_qualified_name_part(value) {
        errors.push(LABEL_VALUE_MSG.to_owned());
    }
    errors
}

/// Port numbers: 1–65535.
pub fn port_number(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_owned()]
    }
}

/// IANA service names (RFC 6335): container port names and named target ports.
pub fn port_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 15 {
        errors.push("must be no more than 15 characters".to_owned());
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errors.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if value.contains("--") {
        errors.push("must not contain consecutive hyphens".to_owned());
    }
    if !value.bytes().any(|b| b.is_ascii_lowercase()) {
        errors.push("must contain at least one letter (a-z)".to_owned());
    }
    if value.starts_with('-') || value.ends_with('-') {
        errors.push("must not begin or end with a hyphen".to_owned());
    }
    errors
}

/// Environment variable names: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn env_var_name(value: &str) -> Vec<String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    let ok =
        value.bytes().next().is_some_and(|b| !b.is_ascii_digit()) && value.bytes().all(allowed);
    if ok {
        Vec::new()
    } else {
        vec![ENV_VAR_NAME_MSG.to_owned()]
    }
}

/// IPv4 or IPv6 address in its textual form.
pub fn ip_address(value: &str) -> Vec<String> {
    if value.parse::<std::net::IpAddr>().is_ok() {
        Vec::new()
    } else {
        vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_and_subdomains() {
        for ok in ["a", "my-name", "123-abc", "a1"] {
            assert!(dns1123_label(ok).is_empty(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", "a.b"] {
            assert_eq!(
                dns1123_label(bad),
                vec![DNS1123_LABEL_MSG.to_owned()],
                "{bad}"
            );
        }
        assert_eq!(
            dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_owned()]
        );
        assert!(dns1123_subdomain("example.com").is_empty());
        assert!(!dns1123_subdomain("example..com").is_empty());
        assert!(!dns1123_subdomain("Example.com").is_empty());
        assert_eq!(dns1123_subdomain(&"a".repeat(254)).len(), 1);
        assert!(dns1035_label("web").is_empty());
        assert_eq!(dns1035_label("1web"), vec![DNS1035_LABEL_MSG.to_owned()]);
    }

    #[test]
    fn qualified_names_and_label_values() {
        for ok in ["app", "app.kubernetes.io/name", "My_Name", "a.b-c"] {
            assert!(qualified_name(ok).is_empty(), "{ok}");
        }
        assert_eq!(
            qualified_name("/app"),
            vec!["prefix part must be non-empty".to_owned()]
        );
        assert_eq!(
            qualified_name("example.com/"),
            vec!["name part must be non-empty".to_owned()]
        );
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert!(qualified_name("-app")[0].starts_with("name part must consist"));
        assert!(
            qualified_name("Example.com/app")[0]
                .starts_with("prefix part a lowercase RFC 1123 subdomain")
        );
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3-x").is_empty());
        assert_eq!(label_value("-x"), vec![LABEL_VALUE_MSG.to_owned()]);
        assert_eq!(label_value(&"x".repeat(64)).len(), 1);
    }

    #[test]
    fn ports_and_env_names() {
        assert!(port_number(80).is_empty());
        assert_eq!(port_number(0).len(), 1);
        assert_eq!(port_number(65536).len(), 1);
        assert!(port_name("http").is_empty());
        assert!(port_name("http-alt2").is_empty());
        assert_eq!(
            port_name("8080"),
            vec!["must contain at least one letter (a-z)".to_owned()]
        );
        assert_eq!(
            port_name("a--b"),
            vec!["must not contain consecutive hyphens".to_owned()]
        );
        assert_eq!(port_name("very-long-port-name").len(), 1);
        assert_eq!(port_name("Http").len(), 1);
        assert!(env_var_name("MY_ENV.NAME").is_empty());
        assert_eq!(env_var_name("1X").len(), 1);
        assert_eq!(env_var_name("").len(), 1);
        assert!(ip_address("10.0.0.1").is_empty());
        assert_eq!(ip_address("10.0.0").len(), 1);
    }
}
