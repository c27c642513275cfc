//! Secret and ConfigMap: configuration handed to pods. Like Kubernetes,
//! their payload is top-level `data`, not a spec.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validate::Validator;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    /// Default `Opaque`.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub secret_type: String,
    /// Values base64-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Plain-text values, merged into `data` on write and never returned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Values base64-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
}

/// Keys of Secret and ConfigMap data: letters, digits, `-`, `_`, `.`.
/// Whether `key` may name an entry of a Secret's or ConfigMap's data: it
/// becomes a file name in volumes, so letters, digits, `-`, `_` and `.`,
/// and never `.` or `..`.
pub fn data_key(key: &str) -> Result<(), &'static str> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err("key must be letters, digits, '-', '_' or '.'");
    }
    if key == "." || key == ".." {
        return Err("key must not be `.` or `..`");
    }
    Ok(())
}

fn validate_key(v: &mut Validator, field: &str, key: &str) {
    if let Err(reason) = data_key(key) {
        v.error(format!("{field}[{key}]"), reason);
    }
}

impl Secret {
    pub fn set_defaults(&mut self) {
        if self.secret_type.is_empty() {
            self.secret_type = "Opaque".into();
        }
        for (key, value) in std::mem::take(&mut self.string_data) {
            self.data.insert(key, BASE64.encode(value));
        }
    }

    pub fn validate(&self, v: &mut Validator) {
        for (field, map) in [("data", &self.data), ("stringData", &self.string_data)] {
            for key in map.keys() {
                validate_key(v, field, key);
            }
        }
        for (key, value) in &self.data {
            if BASE64.decode(value).is_err() {
                v.error(format!("data[{key}]"), "must be base64");
            }
        }
    }

    /// The decoded value of `key`.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.data.get(key).and_then(|v| BASE64.decode(v).ok())
    }
}

impl ConfigMap {
    pub fn validate(&self, v: &mut Validator) {
        for key in self.data.keys() {
            validate_key(v, "data", key);
        }
        for (key, value) in &self.binary_data {
            validate_key(v, "binaryData", key);
            if BASE64.decode(value).is_err() {
                v.error(format!("binaryData[{key}]"), "must be base64");
            }
            if self.data.contains_key(key) {
                v.error(format!("binaryData[{key}]"), "key is also in data");
            }
        }
    }
}
