//! Validation with field paths: every error names the field it is about
//! (`spec.resources.memory: must be at least 1Mi`).

use std::collections::BTreeMap;
use std::fmt;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects every problem of an object, not just the first.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// Names of objects: RFC 1123 DNS labels.
pub fn dns_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is required");
    }
    if name.len() > 63 {
        return Err("must be at most 63 characters");
    }
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let bytes = name.as_bytes();
    if !valid_chars || bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(
            "must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit",
        );
    }
    Ok(())
}

pub fn validate_dns_label(v: &mut Validator, field: &str, name: &str) {
    if let Err(reason) = dns_label(name) {
        v.error(field, reason);
    }
}

/// A DNS subdomain: dot-separated DNS labels, at most 253 characters.
pub fn dns_subdomain(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("must be at most 253 characters");
    }
    if name.split('.').all(|label| dns_label(label).is_ok()) {
        Ok(())
    } else {
        Err("must be a DNS subdomain: dot-separated DNS labels")
    }
}

/// A label or annotation key: `[prefix/]name`, the name at most 63
/// characters of letters, digits, `-`, `_` and `.`, starting and ending
/// alphanumeric; the prefix a DNS subdomain.
pub fn label_key(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            dns_subdomain(prefix).map_err(|_| "prefix must be a DNS subdomain")?;
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("key name is required");
    }
    if name.len() > 63 {
        return Err("key name must be at most 63 characters");
    }
    label_chars(name).map_err(
        |_| "key name must be letters, digits, '-', '_' or '.', starting and ending alphanumeric",
    )
}

/// A label value: empty, or at most 63 characters like a key name.
pub fn label_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err("value must be at most 63 characters");
    }
    label_chars(value).map_err(
        |_| "value must be letters, digits, '-', '_' or '.', starting and ending alphanumeric",
    )
}

fn label_chars(s: &str) -> Result<(), ()> {
    let bytes = s.as_bytes();
    let ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if ok { Ok(()) } else { Err(()) }
}

pub fn validate_labels(v: &mut Validator, field: &str, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        if let Err(reason) = label_key(key).and_then(|()| label_value(value)) {
            v.error(format!("{field}[{key}]"), reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "web-1", "0abc", &"x".repeat(63)] {
            assert_eq!(dns_label(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Web", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        assert!(label_key("app").is_ok());
        assert!(label_key("skiff.dev/role").is_ok());
        assert!(label_key("a.b_c-D").is_ok());
        assert!(label_key("").is_err());
        assert!(label_key("/x").is_err());
        assert!(label_key("Bad_Prefix/x").is_err());
        assert!(label_key("-x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2").is_ok());
        assert!(label_value("has space").is_err());
        assert!(label_value(&"v".repeat(64)).is_err());
    }

    #[test]
    fn errors_render_with_their_field() {
        let mut v = Validator::default();
        v.error("spec.resources.memory", "must be at least 1Mi");
        let errors = v.finish().unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.resources.memory: must be at least 1Mi"
        );
    }
}
