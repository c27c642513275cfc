//! `wasmctl top pods|nodes`: usage as nodes sample it (CPU as cores used,
//! memory held, requests and fuel per second), asked through the API.

use anyhow::Result;
use serde_json::Value;
use skiff_api::quantity::{format_bytes, parse_bytes};

use crate::BadInput;
use crate::cluster::{Target, block_on};
use crate::table;

#[derive(clap::Subcommand)]
pub enum TopCommand {
    /// Pods' CPU, memory, requests/s and fuel/s.
    #[command(alias = "pod", alias = "po")]
    Pods(TopPodsArgs),
    /// Nodes' usage against what they can give.
    #[command(alias = "node", alias = "no")]
    Nodes(TopNodesArgs),
}

#[derive(clap::Args)]
pub struct TopPodsArgs {
    #[arg(short, long)]
    namespace: Option<String>,
    /// Pods of every namespace (cluster admins and metrics tokens).
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only pods this label selector picks, e.g. app=web.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub struct TopNodesArgs {
    #[command(flatten)]
    target: Target,
}

pub fn run(command: TopCommand) -> Result<()> {
    match command {
        TopCommand::Pods(args) => pods(args),
        TopCommand::Nodes(args) => nodes(args),
    }
}

fn pods(args: TopPodsArgs) -> Result<()> {
    if let Some(selector) = &args.selector {
        skiff_api::selector::Selector::parse(selector)
            .map_err(|e| BadInput(format!("-l {selector}: {e}")))?;
    }
    let session = args.target.connect()?;
    let namespace = (!args.all_namespaces).then(|| {
        args.namespace
            .clone()
            .unwrap_or_else(|| session.namespace.clone())
    });
    let list = block_on(
        session
            .client
            .pod_metrics(namespace.as_deref(), args.selector.as_deref()),
    )??;
    let mut rows = vec![];
    let mut header = vec![];
    if args.all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "CPU(cores)", "MEMORY", "REQ/S", "FUEL/S", "NODE"]);
    rows.push(header.into_iter().map(str::to_owned).collect::<Vec<_>>());
    for pod in list["items"].as_array().into_iter().flatten() {
        let mut row = vec![];
        if args.all_namespaces {
            row.push(text(&pod["namespace"]));
        }
        row.extend([
            text(&pod["name"]),
            millicores(pod["cpuCores"].as_f64().unwrap_or(0.0)),
            format_memory(pod["memoryBytes"].as_u64().unwrap_or(0)),
            rate(pod["requestsPerSecond"].as_f64().unwrap_or(0.0)),
            pod["fuelPerSecond"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), rate),
            text(&pod["node"]),
        ]);
        rows.push(row);
    }
    if rows.len() == 1 {
        eprintln!("no pods' usage to show yet (nodes sample every few seconds)");
    } else {
        print!("{}", table::render(&rows));
    }
    warn_unavailable(&list);
    Ok(())
}

fn nodes(args: TopNodesArgs) -> Result<()> {
    let session = args.target.connect()?;
    let list = block_on(session.client.node_metrics())??;
    let mut rows = vec![
        [
            "NAME",
            "CPU(cores)",
            "CPU%",
            "MEMORY",
            "MEMORY%",
            "INSTANCES",
            "PODS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for node in list["items"].as_array().into_iter().flatten() {
        let cpu = node["cpuCores"].as_f64().unwrap_or(0.0);
        let memory = node["memoryBytes"].as_u64().unwrap_or(0);
        let allocatable = &node["allocatable"];
        let cpu_share = allocatable["cpu"]
            .as_str()
            .and_then(skiff_api::kinds::pod::parse_millicores)
            .map(|m| percent(cpu * 1000.0, m as f64));
        let memory_share = allocatable["memory"]
            .as_str()
            .and_then(|m| parse_bytes(m).ok())
            .map(|m| percent(memory as f64, m as f64));
        rows.push(vec![
            text(&node["name"]),
            millicores(cpu),
            cpu_share.unwrap_or_else(|| "-".into()),
            format_memory(memory),
            memory_share.unwrap_or_else(|| "-".into()),
            format!(
                "{}/{}",
                node["instancesInUse"].as_u64().unwrap_or(0),
                node["instanceSlots"].as_u64().unwrap_or(0)
            ),
            node["pods"].as_u64().unwrap_or(0).to_string(),
        ]);
    }
    print!("{}", table::render(&rows));
    warn_unavailable(&list);
    Ok(())
}

fn warn_unavailable(list: &Value) {
    for missing in list["unavailable"].as_array().into_iter().flatten() {
        eprintln!(
            "node {}: no usage: {}",
            crate::logs::escape_controls(text(&missing["node"]).as_bytes()),
            crate::logs::escape_controls(text(&missing["reason"]).as_bytes())
        );
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("<none>").to_owned()
}

/// Cores as kubectl top prints them: millicores, `12m`.
fn millicores(cores: f64) -> String {
    format!("{}m", (cores * 1000.0).round() as u64)
}

/// Memory in whole MiB as kubectl top prints it (`3Mi`), or the exact size
/// below one MiB.
fn format_memory(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{}Mi", (bytes as f64 / (1u64 << 20) as f64).round() as u64)
    } else {
        format_bytes(bytes)
    }
}

fn rate(per_second: f64) -> String {
    if per_second >= 10.0 || per_second == 0.0 {
        format!("{}", per_second.round() as u64)
    } else {
        format!("{per_second:.1}")
    }
}

fn percent(used: f64, of: f64) -> String {
    if of <= 0.0 {
        return "-".into();
    }
    format!("{}%", (used / of * 100.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_print_as_kubectl_top_prints_them() {
        assert_eq!(millicores(0.0123), "12m");
        assert_eq!(millicores(1.5), "1500m");
        assert_eq!(format_memory(3 << 20), "3Mi");
        assert_eq!(format_memory(512 << 10), "512Ki");
        assert_eq!(format_memory(700), "700B");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(2.54), "2.5");
        assert_eq!(rate(123.4), "123");
        assert_eq!(percent(50.0, 200.0), "25%");
        assert_eq!(percent(1.0, 0.0), "-");
    }
}
