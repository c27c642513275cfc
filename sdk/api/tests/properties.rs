//! Properties of the parsers that take what users and clients type:
//! selectors, quantities, manifests and outbound rules. No input panics;
//! what is printed parses back to the same thing; numbers never overflow
//! silently. Case counts are bounded so the suite runs in seconds.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use skiff_api::outbound::AllowRule;
use skiff_api::quantity::{format_bytes, format_duration, parse_bytes, parse_duration, parse_fuel};
use skiff_api::selector::{FieldSelector, Selector};
use skiff_api::validate::nul_byte_at;
use skiff_api::{Kind, admit};

/// 512 cases each in the test suite; `PROPTEST_CASES=100000` for a long
/// run.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text built from the characters selectors are made of, and some others.
fn selector_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r"[a-z0-9A-Z=!,() ._/\-\x00é]{0,40}").unwrap()
}

fn label_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r"[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?").unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn selectors_never_panic_and_print_back_to_themselves(input in selector_text()) {
        if let Ok(parsed) = Selector::parse(&input) {
            let printed = parsed.to_string();
            let reparsed = Selector::parse(&printed);
            prop_assert_eq!(reparsed, Ok(parsed), "printed {}", printed);
        }
    }

    #[test]
    fn built_selectors_round_trip(
        terms in proptest::collection::vec((label_name(), 0u8..6, proptest::collection::vec(label_name(), 1..3)), 0..4)
    ) {
        let text: Vec<String> = terms
            .iter()
            .map(|(key, form, values)| match form {
                0 => format!("{key}={}", values[0]),
                1 => format!("{key}!={}", values[0]),
                2 => format!("{key} in ({})", values.join(",")),
                3 => format!("{key} notin ({})", values.join(",")),
                4 => key.clone(),
                _ => format!("!{key}"),
            })
            .collect();
        let text = text.join(",");
        let parsed = Selector::parse(&text).unwrap();
        prop_assert_eq!(parsed.requirements().len(), terms.len());
        prop_assert_eq!(Selector::parse(&parsed.to_string()).unwrap(), parsed);
    }

    #[test]
    fn field_selectors_never_panic_and_never_keep_a_nul(input in selector_text()) {
        let allowed = Kind::Pod.selectable_fields();
        if let Ok(parsed) = FieldSelector::parse(&input, allowed) {
            for (field, _, value) in parsed.terms() {
                prop_assert!(allowed.contains(&field));
                prop_assert!(!value.contains('\0'));
            }
            // Matching any object is total too.
            let _ = parsed.matches(&json!({"spec": {"nodeName": input}}));
        }
    }

    #[test]
    fn quantities_never_panic(input in r"[0-9]{0,25}[A-Za-z]{0,3}|\PC{0,12}") {
        let _ = parse_bytes(&input);
        let _ = parse_fuel(&input);
        let _ = parse_duration(&input);
    }

    #[test]
    fn byte_sizes_are_exact_or_refused(number in any::<u64>(), unit in 0usize..4) {
        let (suffix, multiplier) = [("", 1u64), ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)][unit];
        let parsed = parse_bytes(&format!("{number}{suffix}"));
        match number.checked_mul(multiplier) {
            Some(exact) => prop_assert_eq!(parsed, Ok(exact)),
            None => prop_assert!(parsed.is_err(), "an overflow must be refused, not wrapped"),
        }
    }

    #[test]
    fn fuel_and_durations_are_exact_or_refused(number in any::<u64>(), unit in 0usize..3) {
        let (fuel_suffix, fuel_multiplier) = [("", 1u64), ("K", 1_000), ("G", 1_000_000_000)][unit];
        let fuel = parse_fuel(&format!("{number}{fuel_suffix}"));
        match number.checked_mul(fuel_multiplier) {
            Some(exact) => prop_assert_eq!(fuel, Ok(exact)),
            None => prop_assert!(fuel.is_err()),
        }
        let (time_suffix, millis) = [("ms", 1u64), ("s", 1_000), ("h", 3_600_000)][unit];
        let duration = parse_duration(&format!("{number}{time_suffix}"));
        match number.checked_mul(millis) {
            Some(exact) => prop_assert_eq!(duration, Ok(Duration::from_millis(exact))),
            None => prop_assert!(duration.is_err()),
        }
    }

    #[test]
    fn formatted_quantities_parse_back(bytes in any::<u64>(), millis in 0u64..(1 << 50)) {
        let printed = format_bytes(bytes);
        // Exact forms parse back to the same size; rounded ones (`1.5Mi`)
        // are for display only.
        if !printed.contains('.') {
            prop_assert_eq!(parse_bytes(&printed), Ok(bytes), "{}", printed);
        }
        let duration = Duration::from_millis(millis);
        prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
    }

    #[test]
    fn outbound_rules_never_panic_and_cover_themselves(
        input in r"(https?://)?(\*|\*\.)?[a-z0-9.\-\[\]:*]{0,20}(:[0-9*]{0,6})?/?|\PC{0,20}"
    ) {
        if let Ok(rule) = AllowRule::parse(&input) {
            prop_assert!(rule.covers(&rule), "{} does not cover itself", input);
            prop_assert_eq!(rule.to_string(), input.clone());
            prop_assert_eq!(AllowRule::parse(&rule.to_string()).unwrap().to_string(), input);
        }
    }
}

/// Arbitrary JSON, shallow enough to stay fast.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        r"\PC{0,8}|[a-z0-9\-]{1,12}|[0-9]{1,4}(Mi|Gi|m|s)?".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_owned()),
                    Just("spec".to_owned()),
                    Just("name".to_owned()),
                    Just("labels".to_owned()),
                    Just("replicas".to_owned()),
                    Just("image".to_owned()),
                    Just("ports".to_owned()),
                    Just("data".to_owned()),
                    r"[a-zA-Z]{1,8}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: config().cases / 2, ..config() })]

    /// Admission of any JSON as any kind answers, never panics; what it
    /// admits, it admits again unchanged (defaults are applied once).
    #[test]
    fn admission_is_total_and_idempotent(kind_index in 0..Kind::ALL.len(), body in json_value(), named in any::<bool>()) {
        let kind = Kind::ALL[kind_index];
        let mut object = body;
        if named && object.is_object() {
            object["apiVersion"] = json!(skiff_api::API_VERSION);
            object["kind"] = json!(kind.name());
            if !object["metadata"].is_object() {
                object["metadata"] = json!({});
            }
            object["metadata"]["name"] = json!("x");
        }
        if let Ok(admitted) = admit(kind, object) {
            let again = admit(kind, admitted.clone()).ok();
            prop_assert_eq!(again, Some(admitted));
        }
    }

    #[test]
    fn nul_bytes_are_found_wherever_they_are(body in json_value(), depth in 0usize..3) {
        // Bury a NUL at `depth` and it is found; the body alone has none
        // unless the generator put one there.
        let mut buried = json!("a\u{0}b");
        for level in 0..depth {
            buried = json!({format!("k{level}"): buried});
        }
        let with = json!({"x": body.clone(), "y": buried});
        let path = nul_byte_at(&with).expect("a NUL is there");
        if nul_byte_at(&body).is_none() {
            let want: Vec<String> = std::iter::once("y".to_owned())
                .chain((0..depth).rev().map(|l| format!("k{l}")))
                .collect();
            prop_assert_eq!(path, want.join("."));
        }
    }
}
