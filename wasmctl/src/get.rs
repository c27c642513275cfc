//! `wasmctl get KIND [NAME...]`: tables like kubectl's, or YAML/JSON, and
//! `--watch` to follow changes.

use anyhow::Result;
use futures::StreamExt;
use serde_json::Value;
use skiff_api::{EventType, Kind};
use skiff_client::{ListOptions, WatchOptions};

use crate::BadInput;
use crate::cluster::{Session, Target, block_on, kind_word, parse_kind};
use crate::table;

#[derive(clap::Args)]
pub struct GetArgs {
    /// pods, deployments, services, routes, secrets, configmaps, namespaces,
    /// nodes (or their singular or short names).
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
        let options = ListOptions {
            label_selector: args.selector.clone(),
            field_selector: args.field_selector.clone(),
            ..Default::default()
        };
        let list = session
            .client
            .list_all(kind, namespace.as_deref(), &options)
            .await?;
        if list.items.is_empty() && !args.watch && matches!(output, Output::Table { .. }) {
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
        if args.watch {
            follow(
                &session,
                kind,
                namespace.as_deref(),
                &options,
                list.metadata.resource_version,
                output,
                all_namespaces,
            )
            .await?;
        }
        Ok(())
    })?
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

/// Prints every change after `revision` until interrupted, resuming the
/// watch when the server ends it and re-listing if it fell too far behind.
async fn follow(
    session: &Session,
    kind: Kind,
    namespace: Option<&str>,
    options: &ListOptions,
    mut revision: String,
    output: Output,
    all_namespaces: bool,
) -> Result<()> {
    loop {
        let watch = WatchOptions {
            resource_version: Some(revision.clone()),
            label_selector: options.label_selector.clone(),
            field_selector: options.field_selector.clone(),
            timeout: None,
        };
        let mut events = Box::pin(session.client.watch(kind, namespace, &watch).await?);
        while let Some(event) = events.next().await {
            let event = event?;
            match event.event_type {
                EventType::Bookmark => {}
                EventType::Error => {
                    let list = session.client.list_all(kind, namespace, options).await?;
                    print_objects(
                        kind,
                        &list.items,
                        output,
                        all_namespaces,
                        false,
                        list_kind(kind),
                    )?;
                    revision = list.metadata.resource_version;
                    break;
                }
                _ => match output {
                    Output::Yaml | Output::Json => print_document(
                        &serde_json::json!({"type": event.event_type, "object": event.object}),
                        output,
                    )?,
                    _ => print_objects(
                        kind,
                        std::slice::from_ref(&event.object),
                        output,
                        all_namespaces,
                        false,
                        list_kind(kind),
                    )?,
                },
            }
            if let Some(rv) = event.object["metadata"]["resourceVersion"].as_str() {
                revision = rv.to_owned();
            }
        }
    }
}
