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

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
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

/// The rules below as JSON Schema patterns, for the OpenAPI document. Each
/// admits no more than its function does (it may admit less: lengths past
/// what a pattern can bound are stated with `maxLength` where they are used).
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// A DNS label or nothing (an optional name).
pub const DNS_LABEL_OR_EMPTY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$";
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";
/// A label key; with `maxLength` 253 the prefix stays within its limit.
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
pub const LABEL_VALUE_PATTERN: &str = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";

/// Standard base64 with padding, as `base64`'s `STANDARD` engine decodes
/// it: whole quartets, the last one possibly padded, its unused bits zero
/// (the engine refuses a non-canonical last symbol).
pub const BASE64_PATTERN: &str =
    r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
/// A byte size as [`crate::quantity::parse_bytes`] reads it, small enough
/// never to overflow (and without the spaces it trims).
pub const BYTES_PATTERN: &str = r"^[0-9]{1,9}(B|Ki|KiB|Mi|MiB|Gi|GiB|k|K|KB|M|MB|G|GB)?$";
/// Fuel as [`crate::quantity::parse_fuel`] reads it.
pub const FUEL_PATTERN: &str = r"^[0-9]{1,9}[kKMG]?$";
/// A duration as [`crate::quantity::parse_duration`] reads it.
pub const DURATION_PATTERN: &str = r"^[0-9]{1,9}(ms|s|m|h)?$";
/// CPU as [`crate::kinds::pod::parse_millicores`] reads it, whole cores or
/// millicores only (it also takes fractions of cores).
pub const CPU_PATTERN: &str = r"^([1-9][0-9]{0,8}m|[1-9][0-9]{0,5})$";

/// An outbound rule as [`crate::outbound::AllowRule::parse`] reads it,
/// conservatively: `*`, or an optional `http://` or `https://`, a host
/// name (or `*.` and one) starting with a letter, so never an address,
/// and an optional port.
pub const ALLOW_RULE_PATTERN: &str =
    r"^(\*|(https?://)?(\*\.)?[a-z][-a-z0-9.]{0,30}(:[1-9][0-9]{0,3})?)$";

/// JSON Schema of a map of labels: keys and values as [`validate_labels`]
/// checks them.
pub fn label_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "propertyNames": {"type": "string", "maxLength": 253, "pattern": LABEL_KEY_PATTERN},
        "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN},
    })
}

/// JSON Schema of a map of annotations: keys are label keys, values free.
pub fn annotation_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "propertyNames": {"type": "string", "maxLength": 253, "pattern": LABEL_KEY_PATTERN},
        "additionalProperties": {"type": "string"},
    })
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

/// The path of the first string or object key in `value` that holds a NUL
/// character (`data.key`, `spec.env[0].value`), if any. Postgres stores no
/// NUL in `jsonb` or `text`, so such an object must be refused before it
/// reaches the database, where it would fail the whole write batch.
pub fn nul_byte_at(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &mut String) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            serde_json::Value::Object(fields) => fields.iter().any(|(key, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                if key.contains('\0') {
                    // The key itself, escaped so the message stays one line.
                    path.push_str(&key.escape_default().to_string());
                    return true;
                }
                path.push_str(key);
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then_some(path)
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
    fn nul_bytes_are_found_with_their_path() {
        use serde_json::json;
        assert_eq!(nul_byte_at(&json!({"data": {"k": "ok"}})), None);
        assert_eq!(
            nul_byte_at(&json!({"data": {"key": "a\u{0}b"}})),
            Some("data.key".into())
        );
        assert_eq!(
            nul_byte_at(&json!({"spec": {"env": [{"value": "x"}, {"value": "\u{0}"}]}})),
            Some("spec.env[1].value".into())
        );
        assert_eq!(
            nul_byte_at(&json!({"metadata": {"labels": {"a\u{0}": "x"}}})),
            Some("metadata.labels.a\\u{0}".into())
        );
        assert_eq!(nul_byte_at(&json!("\u{0}")), Some(String::new()));
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

/// Most values (maps, lists and scalars, counted after YAML's aliases are
/// expanded) a document of an object may hold: far beyond any object of
/// 1 MiB, far below what exhausts memory.
pub const MAX_DOCUMENT_VALUES: usize = 1_000_000;

/// Reads one YAML (or JSON) document into a JSON value, refusing it once
/// it holds more than [`MAX_DOCUMENT_VALUES`] values: a few kilobytes of
/// anchors and aliases would otherwise expand to billions of them before
/// any size check could look.
pub fn bounded_document<'de, D: serde::Deserializer<'de>>(
    document: D,
) -> Result<serde_json::Value, D::Error> {
    let mut budget = MAX_DOCUMENT_VALUES;
    serde::de::DeserializeSeed::deserialize(Bounded(&mut budget), document)
}

struct Bounded<'a>(&'a mut usize);

impl Bounded<'_> {
    fn spend<E: serde::de::Error>(&mut self) -> Result<(), E> {
        if *self.0 == 0 {
            return Err(E::custom(format!(
                "more than {MAX_DOCUMENT_VALUES} values (aliases expanded); objects are limited to 1Mi"
            )));
        }
        *self.0 -= 1;
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Bounded<'_> {
    type Value = serde_json::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML or JSON value")
    }
    fn visit_bool<E: serde::de::Error>(mut self, v: bool) -> Result<Self::Value, E> {
        self.spend()?;
        Ok(v.into())
    }
    fn visit_i64<E: serde::de::Error>(mut self, v: i64) -> Result<Self::Value, E> {
        self.spend()?;
        Ok(v.into())
    }
    fn visit_u64<E: serde::de::Error>(mut self, v: u64) -> Result<Self::Value, E> {
        self.spend()?;
        Ok(v.into())
    }
    fn visit_f64<E: serde::de::Error>(mut self, v: f64) -> Result<Self::Value, E> {
        self.spend()?;
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<Self::Value, E> {
        self.spend()?;
        Ok(v.into())
    }
    fn visit_string<E: serde::de::Error>(mut self, v: String) -> Result<Self::Value, E> {
        self.spend()?;
        Ok(v.into())
    }
    fn visit_unit<E: serde::de::Error>(mut self) -> Result<Self::Value, E> {
        self.spend()?;
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        mut self,
        mut seq: A,
    ) -> Result<Self::Value, A::Error> {
        self.spend()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Bounded(&mut *self.0))? {
            items.push(item);
        }
        Ok(items.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        mut self,
        mut map: A,
    ) -> Result<Self::Value, A::Error> {
        self.spend()?;
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Bounded(&mut *self.0))?;
            fields.insert(key, value);
        }
        Ok(fields.into())
    }
}

#[cfg(test)]
mod bounded_tests {
    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        // Two thousand aliases of a list of a thousand: two million
        // values from 10 KB of text (and few enough aliases for the
        // parser's own limit to let through).
        let list = vec!["x"; 1000].join(", ");
        let aliases = vec!["*a"; 2000].join(", ");
        let bomb = format!("a: &a [{list}]\nb: [{aliases}]\n");
        let error =
            super::bounded_document(serde_yaml_ng::Deserializer::from_str(&bomb)).unwrap_err();
        assert!(
            error.to_string().contains("values (aliases expanded)"),
            "{error}"
        );
        let fine =
            super::bounded_document(serde_yaml_ng::Deserializer::from_str("a: &a [1]\nb: *a\n"))
                .unwrap();
        assert_eq!(fine["b"], serde_json::json!([1]));
    }
}
