//! Label selectors (`app=web,tier in (a,b),!canary`) and field selectors
//! (`spec.nodeName=node-1`), parsed and matched the way Kubernetes does.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Validator, label_key, label_value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// Numeric comparison, for node affinity only.
    Gt,
    Lt,
}

/// One condition on one label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            // As in Kubernetes: an object without the label is "not in".
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt | Operator::Lt => {
                let (Some(have), Some(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::Gt {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator, field: &str, allow_numeric: bool) {
        if let Err(reason) = label_key(&self.key) {
            v.error(format!("{field}.key"), reason);
        }
        match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() => {
                v.error(
                    format!("{field}.values"),
                    "must be non-empty for In and NotIn",
                );
            }
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => {
                v.error(
                    format!("{field}.values"),
                    "must be empty for Exists and DoesNotExist",
                );
            }
            Operator::Gt | Operator::Lt if !allow_numeric => {
                v.error(
                    format!("{field}.operator"),
                    "Gt and Lt are only for node affinity",
                );
            }
            Operator::Gt | Operator::Lt
                if self.values.len() != 1 || self.values[0].parse::<i64>().is_err() =>
            {
                v.error(
                    format!("{field}.values"),
                    "must be a single integer for Gt and Lt",
                );
            }
            _ => {}
        }
    }
}

/// A structured selector, as in a Deployment's `spec.selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    pub(crate) fn validate(&self, v: &mut Validator, field: &str) {
        for (key, value) in &self.match_labels {
            if let Err(reason) = label_key(key).and_then(|()| label_value(value)) {
                v.error(format!("{field}.matchLabels[{key}]"), reason);
            }
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            r.validate(v, &format!("{field}.matchExpressions[{i}]"), false);
        }
    }
}

/// A parsed textual label selector, as in `-l` and `?labelSelector=`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// A selector that does not parse; says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector `{input}`: {reason}")]
pub struct SelectorError {
    input: String,
    reason: String,
}

impl Selector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The selector of equality terms `labels` stands for (a Service's
    /// selector): each key equal to its value.
    pub fn equal_to(labels: &BTreeMap<String, String>) -> Self {
        Self {
            requirements: labels
                .iter()
                .map(|(key, value)| Requirement {
                    key: key.clone(),
                    operator: Operator::In,
                    values: vec![value.clone()],
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
    /// `key notin (a,b)`, `key` and `!key`, separated by commas.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let fail = |reason: String| SelectorError {
            input: input.to_owned(),
            reason,
        };
        let mut requirements = Vec::new();
        for term in split_terms(input).map_err(fail)? {
            let term = term.trim();
            if term.is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(fail("empty term".into()));
            }
            if requirements.len() == MAX_SELECTOR_TERMS {
                return Err(fail(format!("more than {MAX_SELECTOR_TERMS} requirements")));
            }
            let requirement = parse_term(term).map_err(&fail)?;
            if requirement.values.len() > MAX_SELECTOR_VALUES {
                return Err(fail(format!(
                    "`{}`: more than {MAX_SELECTOR_VALUES} values",
                    requirement.key
                )));
            }
            label_key(&requirement.key).map_err(|r| fail(format!("`{}`: {r}", requirement.key)))?;
            for value in &requirement.values {
                label_value(value).map_err(|r| fail(format!("`{value}`: {r}")))?;
            }
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }
}

/// Most requirements (or field terms) one selector may have, and values one
/// `in`/`notin` may list: each becomes query parameters, and a selector of
/// hundreds of thousands (a long URL) would exceed what one statement may
/// bind, failing the caller's own request with a database error.
pub const MAX_SELECTOR_TERMS: usize = 64;
pub const MAX_SELECTOR_VALUES: usize = 256;

/// Splits on commas outside parentheses.
fn split_terms(input: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced `)`".into());
                }
            }
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced `(`".into());
    }
    terms.push(&input[start..]);
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    let requirement = |key: &str, operator, values: Vec<String>| Requirement {
        key: key.trim().to_owned(),
        operator,
        values,
    };
    if let Some(key) = term.strip_prefix('!') {
        return Ok(requirement(key, Operator::DoesNotExist, vec![]));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(requirement(
            key,
            Operator::NotIn,
            vec![value.trim().to_owned()],
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(requirement(
            key,
            Operator::In,
            vec![value.trim().to_owned()],
        ));
    }
    for (word, operator) in [(" notin ", Operator::NotIn), (" in ", Operator::In)] {
        if let Some((key, set)) = term.split_once(word) {
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("`{term}`: the set must be in parentheses"))?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
            if values.iter().any(String::is_empty) {
                return Err(format!("`{term}`: empty value in set"));
            }
            return Ok(requirement(key, operator, values));
        }
    }
    if term.contains(char::is_whitespace) {
        return Err(format!(
            "`{term}`: expected key, key=value, key!=value, key in (...) or key notin (...)"
        ));
    }
    Ok(requirement(term, Operator::Exists, vec![]))
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r.operator {
                Operator::In if r.values.len() == 1 => format!("{}={}", r.key, r.values[0]),
                Operator::NotIn if r.values.len() == 1 => format!("{}!={}", r.key, r.values[0]),
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
                Operator::Gt => format!("{} > {}", r.key, r.values.join(",")),
                Operator::Lt => format!("{} < {}", r.key, r.values.join(",")),
            })
            .collect();
        f.write_str(&terms.join(","))
    }
}

/// A field selector: `field=value` and `field!=value` terms on a fixed set
/// of fields per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses a field selector, accepting only `allowed` fields.
    pub fn parse(input: &str, allowed: &[&str]) -> Result<Self, SelectorError> {
        let fail = |reason: String| SelectorError {
            input: input.to_owned(),
            reason,
        };
        let mut terms = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if terms.len() == MAX_SELECTOR_TERMS {
                return Err(fail(format!("more than {MAX_SELECTOR_TERMS} terms")));
            }
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(fail(format!(
                    "`{term}`: expected field=value or field!=value"
                )));
            };
            let field = field.trim();
            if value.contains('\0') {
                // Nothing stored holds one: the database refuses them.
                return Err(fail(format!("the value of `{field}` contains a NUL byte")));
            }
            if !allowed.contains(&field) {
                return Err(fail(format!(
                    "field `{field}` is not selectable; use one of: {}",
                    allowed.join(", ")
                )));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether the object (as JSON) matches; a missing field is "".
    pub fn matches(&self, object: &serde_json::Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = object
                .pointer(&pointer)
                .and_then(|v| v.as_str())
                .unwrap_or("");
            (actual == value) == *equal
        })
    }

    pub fn terms(&self) -> impl Iterator<Item = (&str, bool, &str)> {
        self.terms
            .iter()
            .map(|(f, e, v)| (f.as_str(), *e, v.as_str()))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn selectors_past_their_size_are_refused_not_sent_to_the_database() {
        let many = vec!["a"; MAX_SELECTOR_TERMS + 1].join(",");
        let err = Selector::parse(&many).unwrap_err();
        assert!(
            err.to_string().contains("more than 64 requirements"),
            "{err}"
        );
        assert!(Selector::parse(&vec!["a"; MAX_SELECTOR_TERMS].join(",")).is_ok());
        let values = vec!["v"; MAX_SELECTOR_VALUES + 1].join(",");
        let err = Selector::parse(&format!("k in ({values})")).unwrap_err();
        assert!(err.to_string().contains("more than 256 values"), "{err}");
        let fields = vec!["metadata.name=x"; MAX_SELECTOR_TERMS + 1].join(",");
        let err = FieldSelector::parse(&fields, &["metadata.name"]).unwrap_err();
        assert!(err.to_string().contains("more than 64 terms"), "{err}");
    }

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_form() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let cases = [
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web,db)", true, true),
            ("app notin (web)", false, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app=web,tier=front", true, false),
            ("tier notin (back)", true, true),
            ("", true, true),
        ];
        for (input, want_web, want_db) in cases {
            let s = Selector::parse(input).unwrap();
            assert_eq!(
                (s.matches(&web), s.matches(&db)),
                (want_web, want_db),
                "{input}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "app=web",
            "app!=web",
            "app in (a,b)",
            "!x",
            "x",
            "a=1,b notin (c,d)",
        ] {
            let parsed = Selector::parse(input).unwrap();
            assert_eq!(Selector::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }

    #[test]
    fn bad_selectors_say_why() {
        for (input, reason) in [
            ("app in web", "parentheses"),
            ("app in (a,", "unbalanced"),
            ("a b", "expected key"),
            ("Bad Key=x", "key name must be"),
            ("app=has space", "value must be"),
            ("a=b,,c=d", "empty term"),
        ] {
            let err = Selector::parse(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{input}: {err}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod = serde_json::json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let allowed = ["spec.nodeName", "status.phase"];
        let s = FieldSelector::parse("spec.nodeName=n1", &allowed).unwrap();
        assert!(s.matches(&pod));
        let s = FieldSelector::parse("spec.nodeName!=n1", &allowed).unwrap();
        assert!(!s.matches(&pod));
        let s = FieldSelector::parse("spec.nodeName=", &allowed).unwrap();
        assert!(!s.matches(&pod));
        assert!(s.matches(&serde_json::json!({"spec": {}})));
        let err = FieldSelector::parse("spec.image=x", &allowed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not selectable"), "{err}");
    }
}
