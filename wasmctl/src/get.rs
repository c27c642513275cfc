//! `wasmctl get KIND [NAME...]`: tables like kubectl's, or YAML/JSON, and
//! `--watch` to follow changes.

use anyhow::Result;
use futures::StreamExt;
use serde_json::Value;
use skiff_api::{EventType, Kind};
use skiff_client::ListOptions;
use skiff_client::watcher::{self, Event};

use crate::BadInput;
use crate::cluster::{Session, Target, block_on, kind_word, parse_kind};
use crate::table;

#[derive(clap::Args)]
pub struct GetArgs {
    /// pods, deployments, services, routes, secrets, configmaps, namespaces,
    /// nodes, events... (or their singular or short names).
    kind: String,
    /// Objects to show; all when none.
    names: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector, e.g. app=web,tier!=db.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Field selector, e.g. spec.nodeName=node-1.
    #[arg(long)]
    field_selector: Option<String>,
    /// wide, yaml, json or name.
    #[arg(short, long)]
    output: Option<String>,
    /// After listing, print changes as they happen.
    #[arg(short, long)]
    watch: bool,
    /// With events: only those about this object, e.g. pod/web-1.
    #[arg(long = "for", value_name = "KIND/NAME")]
    for_object: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Table { wide: bool },
    Yaml,
    Json,
    Name,
}

pub fn run(args: GetArgs) -> Result<()> {
    if crate::tokens::named(&args.kind) {
        let session = args.target.connect()?;
        let namespace = (!args.all_namespaces)
            .then(|| args.namespace.clone().unwrap_or(session.namespace.clone()));
        return crate::tokens::list(
            &session,
            namespace.as_deref(),
            args.output.as_deref() == Some("json"),
        );
    }
    let kind = parse_kind(&args.kind)?;
    let output = match args.output.as_deref() {
        None => Output::Table { wide: false },
        Some("wide") => Output::Table { wide: true },
        Some("yaml") => Output::Yaml,
        Some("json") => Output::Json,
        Some("name") => Output::Name,
        Some(other) => {
            return Err(
                BadInput(format!("--output `{other}`: use wide, yaml, json or name")).into(),
            );
        }
    };
    if args.all_namespaces && args.namespace.is_some() {
        return Err(BadInput("--all-namespaces and --namespace exclude each other".into()).into());
    }
    let field_selector = match &args.for_object {
        None => args.field_selector.clone(),
        Some(_) if kind != Kind::Event => {
            return Err(BadInput(
                "--for narrows events: `wasmctl get events --for pod/NAME`".into(),
            )
            .into());
        }
        Some(object) => {
            let about = about(object)?;
            Some(match &args.field_selector {
                Some(more) => format!("{about},{more}"),
                None => about,
            })
        }
    };
    if args.watch && !args.names.is_empty() {
        return Err(BadInput(
            "--watch follows a whole kind; use -l or --field-selector to narrow it".into(),
        )
        .into());
    }
    let session = args.target.connect()?;
    let namespace = if args.all_namespaces {
        None
    } else {
        session.namespace_for(kind, args.namespace.as_deref())
    };
    let all_namespaces = args.all_namespaces && kind.namespaced();
    block_on(async {
        if !args.names.is_empty() {
            return show_named(
                &session,
                kind,
                namespace.as_deref(),
                &args.names,
                output,
                all_namespaces,
            )
            .await;
        }
        if args.watch {
            let config = watcher::Config {
                namespace: namespace.clone(),
                label_selector: args.selector.clone(),
                field_selector: field_selector.clone(),
            };
            return follow(&session, kind, config, output, all_namespaces).await;
        }
        let options = ListOptions {
            label_selector: args.selector.clone(),
            field_selector: field_selector.clone(),
            ..Default::default()
        };
        let mut list = session
            .client
            .list_all(kind, namespace.as_deref(), &options)
            .await?;
        if kind == Kind::Event {
            // As kubectl shows them: oldest last happening first.
            list.items.sort_by(|a, b| {
                let at = |e: &Value| e["lastTimestamp"].as_str().unwrap_or("").to_owned();
                at(a).cmp(&at(b))
            });
        }
        if list.items.is_empty() && matches!(output, Output::Table { .. }) {
            match &namespace {
                Some(ns) => eprintln!("No {} found in namespace {ns}.", kind.plural()),
                None => eprintln!("No {} found.", kind.plural()),
            }
            return Ok(());
        }
        print_objects(
            kind,
            &list.items,
            output,
            all_namespaces,
            true,
            list_kind(kind),
        )?;
        Ok(())
    })?
}

/// The field selector for events about `object` (`pod/web-1`).
fn about(object: &str) -> Result<String> {
    let bad = || {
        BadInput(format!(
            "--for `{object}`: expected KIND/NAME, e.g. pod/web-1"
        ))
    };
    let (kind, name) = object.split_once('/').ok_or_else(bad)?;
    if name.is_empty() || name.contains([',', '=', '!']) {
        return Err(bad().into());
    }
    let kind = parse_kind(kind)?;
    Ok(format!(
        "involvedObject.kind={},involvedObject.name={name}",
        kind.name()
    ))
}

fn list_kind(kind: Kind) -> String {
    format!("{}List", kind.name())
}

async fn show_named(
    session: &Session,
    kind: Kind,
    namespace: Option<&str>,
    names: &[String],
    output: Output,
    all_namespaces: bool,
) -> Result<()> {
    let mut objects = Vec::new();
    for name in names {
        objects.push(session.client.get(kind, namespace, name).await?);
    }
    if objects.len() == 1 && matches!(output, Output::Yaml | Output::Json) {
        return print_document(&objects[0], output);
    }
    print_objects(
        kind,
        &objects,
        output,
        all_namespaces,
        true,
        list_kind(kind),
    )
}

fn print_objects(
    kind: Kind,
    objects: &[Value],
    output: Output,
    all_namespaces: bool,
    header: bool,
    list_kind: String,
) -> Result<()> {
    match output {
        Output::Table { wide } => {
            let mut rows = Vec::new();
            if header {
                rows.push(table::header(kind, wide, all_namespaces));
            }
            rows.extend(
                objects
                    .iter()
                    .map(|o| table::row(kind, o, wide, all_namespaces)),
            );
            print!("{}", table::render(&rows));
        }
        Output::Name => {
            for object in objects {
                println!(
                    "{}/{}",
                    kind_word(kind),
                    object["metadata"]["name"].as_str().unwrap_or_default()
                );
            }
        }
        Output::Yaml | Output::Json => {
            let list = serde_json::json!({
                "apiVersion": skiff_api::API_VERSION,
                "kind": list_kind,
                "items": objects,
            });
            print_document(&list, output)?;
        }
    }
    Ok(())
}

fn print_document(value: &Value, output: Output) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        _ => print!("{}", serde_yaml_ng::to_string(value)?),
    }
    Ok(())
}

/// Prints the objects, then every change until interrupted; a relist
/// (after the watcher lost its revision) prints the full list again, without
/// the header. The first error ends it.
async fn follow(
    session: &Session,
    kind: Kind,
    config: watcher::Config,
    output: Output,
    all_namespaces: bool,
) -> Result<()> {
    let mut events = std::pin::pin!(watcher::watcher(session.client.clone(), kind, config));
    let mut header = true;
    while let Some(event) = events.next().await {
        let (event_type, object) = match event? {
            Event::Restarted { items, .. } => {
                print_objects(
                    kind,
                    &items,
                    output,
                    all_namespaces,
                    std::mem::take(&mut header),
                    list_kind(kind),
                )?;
                continue;
            }
            Event::Added(object) => (EventType::Added, object),
            Event::Modified(object) => (EventType::Modified, object),
            Event::Deleted(object) => (EventType::Deleted, object),
        };
        match output {
            Output::Yaml | Output::Json => print_document(
                &serde_json::json!({"type": event_type, "object": object}),
                output,
            )?,
            _ => print_objects(
                kind,
                std::slice::from_ref(&object),
                output,
                all_namespaces,
                false,
                list_kind(kind),
            )?,
        }
    }
    Ok(())
}
