//! Manifest and index parsing on what a registry may send: any bytes get
//! an answer and never a panic, and whatever is over a cap is refused.

use proptest::prelude::*;
use serde_json::json;
use skiff_oci::{Limits, OciError, ParsedManifest, parse_manifest};

/// 256 cases each in the test suite; `PROPTEST_CASES=100000` for a long
/// run.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    }
}

/// A JSON value of some depth, keys drawn to hit the manifest's fields.
fn value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z./+0-9:]{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let key = prop_oneof![
            Just("schemaVersion".to_owned()),
            Just("mediaType".to_owned()),
            Just("config".to_owned()),
            Just("layers".to_owned()),
            Just("manifests".to_owned()),
            Just("digest".to_owned()),
            Just("size".to_owned()),
            Just("platform".to_owned()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn descriptor() -> impl Strategy<Value = serde_json::Value> {
    (any::<i64>(), "[a-z./+]{1,30}", "[0-9a-f]{64}").prop_map(|(size, media_type, hex)| {
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": size})
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_get_an_answer(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_manifest("r", &bytes, &Limits::default());
    }

    #[test]
    fn any_json_gets_an_answer(value in value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let _ = parse_manifest("r", &bytes, &Limits::default());
    }

    #[test]
    fn manifests_over_the_layer_count_are_refused(
        config in descriptor(),
        layers in prop::collection::vec(descriptor(), 0..40),
        max_layers in 0usize..40,
    ) {
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2, "config": config, "layers": layers,
        })).unwrap();
        let limits = Limits { max_layers, ..Limits::default() };
        match parse_manifest("r", &bytes, &limits) {
            Ok(ParsedManifest::Image(manifest)) => {
                prop_assert!(layers.len() <= max_layers);
                prop_assert_eq!(manifest.layers.len(), layers.len());
            }
            Err(OciError::TooManyLayers { count, limit, .. }) => {
                prop_assert!(layers.len() > max_layers);
                prop_assert_eq!((count, limit), (layers.len(), max_layers));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn manifests_and_indexes_over_their_caps_are_refused(
        entries in prop::collection::vec(descriptor(), 0..20),
        index in any::<bool>(),
        padding in 0usize..2048,
        cap in 64u64..2048,
    ) {
        let mut bytes = if index {
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": entries})).unwrap()
        } else {
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "config": {"mediaType": "a", "digest": "sha256:0", "size": 1},
                "layers": entries,
            })).unwrap()
        };
        // Whitespace keeps the JSON what it was, only longer.
        bytes.extend(std::iter::repeat_n(b' ', padding));
        let limits = if index {
            Limits { max_index_bytes: cap, max_manifest_bytes: 1, ..Limits::default() }
        } else {
            Limits { max_manifest_bytes: cap, max_index_bytes: 1, ..Limits::default() }
        };
        let over = bytes.len() as u64 > cap;
        match parse_manifest("r", &bytes, &limits) {
            Err(OciError::OverCap { cap: which, limit, .. }) => {
                prop_assert!(over);
                prop_assert_eq!(limit, cap);
                prop_assert_eq!(
                    which,
                    if index { "the index size limit" } else { "the manifest size limit" }
                );
            }
            Ok(ParsedManifest::Index(_)) => prop_assert!(index && !over),
            Ok(ParsedManifest::Image(_)) => prop_assert!(!index && !over),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
