//! `wasmctl cordon`, `uncordon` and `drain`: take nodes out of (and back
//! into) scheduling, and move their pods elsewhere.

use anyhow::Result;
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::{Client, ListOptions};

use crate::cluster::{Target, block_on};

#[derive(clap::Args)]
pub struct NodeArgs {
    node: String,
    #[command(flatten)]
    target: Target,
}

pub fn cordon(args: NodeArgs, unschedulable: bool) -> Result<()> {
    let session = args.target.connect()?;
    block_on(set_unschedulable(
        &session.client,
        &args.node,
        unschedulable,
    ))??;
    let word = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    println!("node/{} {word}", args.node);
    Ok(())
}

async fn set_unschedulable(client: &Client, node: &str, unschedulable: bool) -> Result<()> {
    client
        .patch(
            Kind::Node,
            None,
            node,
            &json!({"spec": {"unschedulable": unschedulable}}),
            false,
        )
        .await?;
    Ok(())
}

/// Cordons the node, then moves every pod off it: a pod a controller owns
/// is deleted (its controller replaces it); a bare pod is recreated unbound,
/// so the scheduler places it on another node.
pub fn drain(args: NodeArgs) -> Result<()> {
    let session = args.target.connect()?;
    block_on(async {
        let client = &session.client;
        set_unschedulable(client, &args.node, true).await?;
        println!("node/{} cordoned", args.node);
        let options = ListOptions {
            field_selector: Some(format!("spec.nodeName={}", args.node)),
            ..Default::default()
        };
        let pods = client.list_all(Kind::Pod, None, &options).await?;
        for pod in pods.items {
            let namespace = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let revision = pod["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_owned);
            let owned = pod["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| !o.is_empty());
            client
                .delete(Kind::Pod, Some(&namespace), &name, revision.as_deref())
                .await?;
            if owned {
                println!("pod/{name} evicted");
            } else {
                client
                    .create(Kind::Pod, Some(&namespace), &unbound_copy(pod))
                    .await?;
                println!("pod/{name} moved");
            }
        }
        println!("node/{} drained", args.node);
        Ok(())
    })?
}

/// The pod as it was asked for: no binding, no status, no server fields.
fn unbound_copy(mut pod: Value) -> Value {
    crate::apply::strip_server_fields(&mut pod);
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.remove("nodeName");
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_pod_keeps_its_spec_but_not_its_place() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "shop", "uid": "u", "resourceVersion": "3", "labels": {"a": "b"}},
            "spec": {"image": "x", "nodeName": "n1"},
            "status": {"phase": "Running"},
        });
        assert_eq!(
            unbound_copy(pod),
            json!({"metadata": {"name": "p", "namespace": "shop", "labels": {"a": "b"}}, "spec": {"image": "x"}})
        );
    }
}
