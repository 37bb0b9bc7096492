//! Docker's image reference grammar (`[domain[:port]/]path[:tag][@digest]`), parsed by
//! hand: the regex oci-spec compiles for it costs ~15 MB of memory, most of the agent's.

use oci_client::Reference;

/// The registry of names without a domain.
const DOCKER_HUB: &str = "docker.io";
/// The longest repository name Docker accepts.
const NAME_MAX: usize = 255;

/// Parses `reference` as Docker does: `busybox` → `docker.io/library/busybox:latest`,
/// `host:5000/a/b:1`, `name@sha256:…`. The error says what is wrong.
pub fn parse(reference: &str) -> Result<Reference, String> {
    if reference.is_empty() {
        return Err("invalid reference format: the name is empty".into());
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or("invalid reference format: only sha256 digests are supported")?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(
                "invalid reference format: a sha256 digest has 64 lowercase hex digits".into(),
            );
        }
    }
    // A tag follows the last ':' after the last '/' (a ':' before it is a port).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag
        && !valid_tag(tag)
    {
        return Err(format!("invalid reference format: invalid tag {tag:?}"));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            if !valid_domain(first) {
                return Err(format!(
                    "invalid reference format: invalid registry {first:?}"
                ));
            }
            (first.to_owned(), rest.to_owned())
        }
        _ if name.contains('/') => (DOCKER_HUB.to_owned(), name.to_owned()),
        _ => (DOCKER_HUB.to_owned(), format!("library/{name}")),
    };
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("invalid reference format: repository name must be lowercase".into());
    }
    if path.is_empty() || !path.split('/').all(valid_path_component) {
        return Err(format!(
            "invalid reference format: invalid repository {path:?}"
        ));
    }
    if path.len() > NAME_MAX {
        return Err(
            "invalid reference format: repository name must not be more than 255 characters".into(),
        );
    }
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(domain, path, tag.to_owned(), digest.to_owned())
        }
        (None, Some(digest)) => Reference::with_digest(domain, path, digest.to_owned()),
        (tag, None) => Reference::with_tag(domain, path, tag.unwrap_or("latest").to_owned()),
    })
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// Dot-separated labels of letters, digits and inner hyphens, with an optional port.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_like_docker() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app", "docker.io/user/app:latest"),
            ("localhost/app:v1", "localhost/app:v1"),
            (
                "127.0.0.1:5055/skiff/httpd:1",
                "127.0.0.1:5055/skiff/httpd:1",
            ),
            ("skiff.local/httpd:1", "skiff.local/httpd:1"),
            (
                "registry.example.com:443/a/b-c__d.e/f",
                "registry.example.com:443/a/b-c__d.e/f:latest",
            ),
        ];
        for (input, whole) in cases {
            assert_eq!(
                parse(input).map(|r| r.whole()).as_deref(),
                Ok(whole),
                "{input}"
            );
        }
        let by_digest = parse(&format!("example.com/app@{digest}")).expect("digest");
        assert_eq!(by_digest.digest(), Some(digest.as_str()));
        assert_eq!(by_digest.tag(), None);
        let both = parse(&format!("app:1@{digest}")).expect("tag and digest");
        assert_eq!(
            (both.tag(), both.digest()),
            (Some("1"), Some(digest.as_str()))
        );
    }

    #[test]
    fn bad_names_say_why() {
        for (input, why) in [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("app:", "tag"),
            ("app:-x", "tag"),
            ("a//b", "repository"),
            ("a/b_", "repository"),
            ("a/.b", "repository"),
            ("app@sha256:abc", "64"),
            ("app@md5:abc", "sha256"),
            ("exa_mple.com/app", "registry"),
            ("example.com:port/app", "registry"),
            (" app", "repository"),
        ] {
            let error = parse(input).expect_err(input);
            assert!(error.contains(why), "{input:?}: {error}");
        }
    }
}
