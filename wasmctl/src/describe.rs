//! `wasmctl describe KIND NAME`: an object for people: identity, labels,
//! spec and status, conditions as a table.

use anyhow::Result;
use serde_json::Value;
use skiff_api::Kind;

use skiff_client::ListOptions;

use crate::cluster::{Session, Target, block_on, parse_kind};
use crate::table;

#[derive(clap::Args)]
pub struct DescribeArgs {
    kind: String,
    names: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    target: Target,
}

pub fn run(args: DescribeArgs) -> Result<()> {
    let kind = parse_kind(&args.kind)?;
    let session = args.target.connect()?;
    let namespace = session.namespace_for(kind, args.namespace.as_deref());
    block_on(async {
        let mut first = true;
        for name in &args.names {
            let object = session.client.get(kind, namespace.as_deref(), name).await?;
            if !first {
                println!();
            }
            first = false;
            print!("{}", describe(kind, &object));
            if kind != Kind::Event {
                print!("{}", events_of(&session, kind, &object).await);
            }
        }
        Ok(())
    })?
}

fn describe(kind: Kind, object: &Value) -> String {
    let meta = &object["metadata"];
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| "<none>".into())
    };
    let pairs = |v: &Value| match v.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n              "),
        _ => "<none>".into(),
    };
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        out.push_str(&format!("{:<14}{value}\n", format!("{label}:")));
    };
    field("Name", text(&meta["name"]));
    if kind.namespaced() {
        field("Namespace", text(&meta["namespace"]));
    }
    field("Kind", kind.name().to_owned());
    field("Labels", pairs(&meta["labels"]));
    field("Annotations", pairs(&meta["annotations"]));
    field(
        "Created",
        format!(
            "{} ({} ago)",
            text(&meta["creationTimestamp"]),
            table::age(meta["creationTimestamp"].as_str())
        ),
    );
    field("UID", text(&meta["uid"]));
    field("Revision", text(&meta["resourceVersion"]));
    if let Some(generation) = meta["generation"].as_i64() {
        field("Generation", generation.to_string());
    }
    match kind {
        Kind::Secret => {
            out.push_str(&format!(
                "Type:         {}\n\nData\n====\n",
                text(&object["type"])
            ));
            for (key, value) in object["data"].as_object().into_iter().flatten() {
                let bytes = value.as_str().map_or(0, |v| v.len() * 3 / 4);
                out.push_str(&format!("{key}:  {bytes} bytes\n"));
            }
        }
        Kind::ConfigMap => {
            out.push_str("\nData\n====\n");
            for (key, value) in object["data"].as_object().into_iter().flatten() {
                out.push_str(&format!(
                    "{key}:\n----\n{}\n\n",
                    value.as_str().unwrap_or_default()
                ));
            }
        }
        Kind::ResourceQuota => {
            let mut rows = vec![vec![
                "Resource".to_owned(),
                "Used".to_owned(),
                "Hard".to_owned(),
            ]];
            for (resource, hard) in object["spec"]["hard"].as_object().into_iter().flatten() {
                let used = object["status"]["used"]
                    .get(resource)
                    .map_or_else(|| "-".to_owned(), text);
                rows.push(vec![resource.clone(), used, text(hard)]);
            }
            out.push('\n');
            out.push_str(&table::render(&rows));
        }
        Kind::Event => {
            let involved = &object["involvedObject"];
            out.push_str(&format!(
                "Object:       {}/{} (uid {})\nType:         {}\nReason:       {}\nMessage:      {}\nCount:        {}\nFirst:        {}\nLast:         {}\nSource:       {}\n",
                text(&involved["kind"]),
                text(&involved["name"]),
                text(&involved["uid"]),
                text(&object["type"]),
                text(&object["reason"]),
                text(&object["message"]),
                object["count"].as_u64().unwrap_or(1),
                text(&object["firstTimestamp"]),
                text(&object["lastTimestamp"]),
                format!(
                    "{} {}",
                    text(&object["source"]["component"]),
                    object["source"]["host"].as_str().unwrap_or("")
                )
                .trim_end(),
            ));
        }
        Kind::Namespace => {
            out.push_str(&crate::policy::describe(&object["spec"]["policy"]));
            section(&mut out, "Status", &object["status"]);
        }
        _ => {
            section(&mut out, "Spec", &object["spec"]);
            let mut status = object["status"].clone();
            let conditions = status.as_object_mut().and_then(|s| s.remove("conditions"));
            section(&mut out, "Status", &status);
            if let Some(Value::Array(conditions)) = conditions {
                out.push_str("Conditions:\n");
                let mut rows = vec![
                    ["TYPE", "STATUS", "REASON", "MESSAGE"]
                        .map(String::from)
                        .to_vec(),
                ];
                for c in conditions {
                    rows.push(
                        ["type", "status", "reason", "message"]
                            .map(|f| c[f].as_str().unwrap_or("").to_owned())
                            .to_vec(),
                    );
                }
                for line in table::render(&rows).lines() {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
    }
    out
}

/// The Events about `object`, oldest first, as describe ends with them.
async fn events_of(session: &Session, kind: Kind, object: &Value) -> String {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    // Events about cluster-scoped objects are kept in `default`.
    let namespace = meta["namespace"]
        .as_str()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default");
    let mut selector = format!(
        "involvedObject.kind={},involvedObject.name={name}",
        kind.name()
    );
    if let Some(uid) = meta["uid"].as_str() {
        selector.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let options = ListOptions {
        field_selector: Some(selector),
        ..Default::default()
    };
    let mut events = match session
        .client
        .list_all(Kind::Event, Some(namespace), &options)
        .await
    {
        Ok(list) => list.items,
        Err(e) => return format!("Events:       <cannot read them: {e}>\n"),
    };
    if events.is_empty() {
        return "Events:       <none>\n".into();
    }
    events.sort_by_key(|e| e["lastTimestamp"].as_str().unwrap_or("").to_owned());
    let mut rows = vec![
        ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]
            .map(String::from)
            .to_vec(),
    ];
    for event in &events {
        let count = event["count"].as_u64().unwrap_or(1);
        let age = table::age(event["lastTimestamp"].as_str());
        let age = if count > 1 {
            format!(
                "{age} (x{count} over {})",
                table::age(event["firstTimestamp"].as_str())
            )
        } else {
            age
        };
        let source = &event["source"];
        let from = match source["host"].as_str().filter(|h| !h.is_empty()) {
            Some(host) => format!("{}, {host}", source["component"].as_str().unwrap_or("")),
            None => source["component"].as_str().unwrap_or("").to_owned(),
        };
        rows.push(vec![
            event["type"].as_str().unwrap_or("").to_owned(),
            event["reason"].as_str().unwrap_or("").to_owned(),
            age,
            from,
            event["message"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    let mut out = String::from("Events:\n");
    for line in table::render(&rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// A nested value as indented YAML under a heading.
fn section(out: &mut String, heading: &str, value: &Value) {
    let empty = value.is_null() || value.as_object().is_some_and(|m| m.is_empty());
    if empty {
        out.push_str(&format!("{heading}:       <none>\n"));
        return;
    }
    out.push_str(&format!("{heading}:\n"));
    let yaml = serde_yaml_ng::to_string(value).unwrap_or_default();
    for line in yaml.lines() {
        out.push_str(&format!("  {line}\n"));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn describes_identity_spec_status_and_conditions() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "uid": "u", "resourceVersion": "7", "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"image": "reg/web:v1"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let text = describe(Kind::Pod, &pod);
        for want in [
            "Name:         web\n",
            "Namespace:    shop\n",
            "Labels:       app=web\n",
            "Annotations:  <none>\n",
            "Spec:\n  image: reg/web:v1\n",
            "Status:\n  phase: Running\n",
            "Conditions:\n  TYPE    STATUS   REASON   MESSAGE\n  Ready   True\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn secrets_show_sizes_not_values() {
        let secret =
            json!({"metadata": {"name": "keys"}, "type": "Opaque", "data": {"api": "czNjcmV0"}});
        let text = describe(Kind::Secret, &secret);
        assert!(text.contains("api:  6 bytes"), "{text}");
        assert!(!text.contains("czNjcmV0"));
    }
}
