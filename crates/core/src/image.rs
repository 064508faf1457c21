//! Container image references (`registry/path:tag@sha256:…`), checked against the OCI
//! distribution reference grammar.

use std::fmt;

/// A parsed image reference. Slipway only deploys references that pin a tag, a digest, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), if the reference names one.
    pub registry: Option<String>,
    /// Repository path below the registry, e.g. `acme/web`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Why a string is not an image reference Slipway accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 512 characters")]
    TooLong,
    #[error("registry host {0:?} is not a valid host[:port]")]
    BadRegistry(String),
    #[error(
        "path component {0:?} must be lowercase letters and digits, separated by '.', '_', '__' or '-'"
    )]
    BadPathComponent(String),
    #[error(
        "tag {0:?} must be 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
    )]
    BadTag(String),
    #[error("digest {0:?} must look like sha256:<64 hex digits>")]
    BadDigest(String),
    #[error("must pin a version with a tag (:1.4.2) and/or a digest (@sha256:...)")]
    Unpinned,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self, ImageRefError> {
        if input.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if input.len() > 512 {
            return Err(ImageRefError::TooLong);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };
        // A tag follows the last ':' unless that ':' belongs to a registry port (a '/' after it).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => {
                let tag = &rest[i + 1..];
                check_tag(tag)?;
                (&rest[..i], Some(tag.to_owned()))
            }
            _ => (rest, None),
        };
        if tag.is_none() && digest.is_none() {
            return Err(ImageRefError::Unpinned);
        }
        let (registry, repository) = split_registry(name);
        if let Some(host) = registry {
            check_registry(host)?;
        }
        if repository.is_empty() {
            return Err(ImageRefError::BadPathComponent(String::new()));
        }
        for component in repository.split('/') {
            check_path_component(component)?;
        }
        Ok(Self {
            registry: registry.map(str::to_owned),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// A short label for the version this reference pins: the tag, else the digest's first
    /// 12 hex digits.
    pub fn version_label(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => tag.clone(),
            (None, Some(digest)) => {
                let hex = digest.split_once(':').map_or(digest.as_str(), |(_, h)| h);
                hex.chars().take(12).collect()
            }
            (None, None) => String::new(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The first component is a registry when it looks like a host: it has a '.' or a ':', or is
/// `localhost` (the rule Docker and containerd use).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_registry(host: &str) -> Result<(), ImageRefError> {
    let bad = || ImageRefError::BadRegistry(host.to_owned());
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(())
}

fn check_path_component(c: &str) -> Result<(), ImageRefError> {
    let bad = || ImageRefError::BadPathComponent(c.to_owned());
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    let bytes: Vec<char> = c.chars().collect();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err(bad());
    };
    if !alnum(*first) || !alnum(*last) {
        return Err(bad());
    }
    // Separators: one '.', one or two '_', or any number of '-', always between alphanumerics.
    let mut i = 0;
    while i < bytes.len() {
        let ch = bytes[i];
        if alnum(ch) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep: String = bytes[start..i].iter().collect();
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|s| s == '-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), ImageRefError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ImageRefError::BadTag(tag.to_owned()))
    }
}

fn check_digest(digest: &str) -> Result<(), ImageRefError> {
    let bad = || ImageRefError::BadDigest(digest.to_owned());
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let hex_ok =
        |len: usize| hex.len() == len && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
    let ok = match algorithm {
        "sha256" => hex_ok(64),
        "sha512" => hex_ok(128),
        _ => false,
    };
    if ok { Ok(()) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::{ImageRef, ImageRefError};

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_pinned_references() {
        let r = ImageRef::parse("ghcr.io/acme/web:1.4.2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.registry.as_deref(), Some("ghcr.io"));
        assert_eq!(r.repository, "acme/web");
        assert_eq!(r.tag.as_deref(), Some("1.4.2"));
        assert_eq!(r.version_label(), "1.4.2");

        let with_port = format!("localhost:5000/web@{DIGEST}");
        let r = ImageRef::parse(&with_port).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.registry.as_deref(), Some("localhost:5000"));
        assert_eq!(r.tag, None);
        assert_eq!(r.version_label(), "0123456789ab");
        assert_eq!(r.to_string(), with_port);

        for ok in ["nginx:1.27", "library/nginx:latest", "a.b/c__d/e-f.g:v1_2"] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
        assert!(ImageRef::parse(&format!("web:1.0@{DIGEST}")).is_ok());
    }

    #[test]
    fn rejects_what_a_registry_would_reject() {
        assert_eq!(ImageRef::parse(""), Err(ImageRefError::Empty));
        assert_eq!(
            ImageRef::parse("ghcr.io/acme/web"),
            Err(ImageRefError::Unpinned)
        );
        assert_eq!(
            ImageRef::parse("localhost:5000/web"),
            Err(ImageRefError::Unpinned)
        );
        for bad in [
            "Acme/web:1",
            "web:",
            "web:.hidden",
            "web@sha256:abc",
            "web@md5:0123",
            "acme//web:1",
            "acme/web-:1",
            "bad host!/web:1",
            "web:1 2",
            ":1",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
