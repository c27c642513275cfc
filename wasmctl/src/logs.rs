//! `wasmctl logs`: pods' output, read through the API from their nodes.
//!
//! One pod (`POD`, `pod/NAME`), every pod of a Deployment
//! (`deployment/NAME`), or every pod a label selector picks (`-l`). With
//! several pods each line begins with `[pod/NAME]`; followed, their lines
//! interleave as they arrive.

use std::io::Write as _;

use anyhow::{Result, bail};
use futures::StreamExt as _;
use serde_json::Value;
use skiff_api::Kind;
use skiff_api::kinds::deployment::Deployment;
use skiff_client::ListOptions;
use skiff_client::node_api::LogOptions;

use crate::BadInput;
use crate::cluster::{Session, Target, block_on};

#[derive(clap::Args)]
pub struct LogsArgs {
    /// POD, pod/NAME or deployment/NAME; leave out with -l.
    object: Option<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// Every pod this label selector picks, e.g. app=web.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Keep printing lines as they are written, until the pods are gone or
    /// Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines of each pod (-1: all).
    #[arg(long, value_name = "N", default_value_t = -1, allow_negative_numbers = true)]
    tail: i64,
    /// Only lines of the last DURATION, e.g. 30s, 5m, 2h.
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// The run before the last restart.
    #[arg(short, long)]
    previous: bool,
    /// End each pod's output after this many bytes.
    #[arg(long, value_name = "BYTES")]
    limit_bytes: Option<u64>,
    /// Begin each line with its time (RFC 3339).
    #[arg(long)]
    timestamps: bool,
    /// Begin each line with the request (or trace) it belongs to.
    #[arg(long)]
    request_ids: bool,
    /// Begin each line with [pod/NAME] even for one pod.
    #[arg(long)]
    prefix: bool,
    /// Most pods followed at once.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_log_requests: usize,
    /// Print lines as the pods wrote them, control characters included
    /// (by default they are shown escaped, e.g. \x1b, so a pod cannot
    /// drive the terminal or overwrite other lines).
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    target: Target,
}

pub fn run(args: LogsArgs) -> Result<()> {
    let options = options(&args)?;
    let session = args.target.connect()?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| session.namespace.clone());
    block_on(async {
        let pods = pods(&session, &namespace, &args).await?;
        if options.follow && pods.len() > args.max_log_requests {
            return Err(BadInput(format!(
                "{} pods to follow, more than --max-log-requests {}; raise it or pick fewer pods",
                pods.len(),
                args.max_log_requests
            ))
            .into());
        }
        let prefix = args.prefix || pods.len() > 1;
        let label = |pod: &str| {
            if prefix {
                format!("[pod/{pod}] ")
            } else {
                String::new()
            }
        };
        let mut failed = 0;
        if options.follow {
            let mut streams = Vec::new();
            for pod in &pods {
                match session.client.logs(&namespace, pod, &options).await {
                    Ok(lines) => {
                        let label = label(pod);
                        let name = pod.clone();
                        streams.push(
                            lines
                                .map(move |line| (name.clone(), label.clone(), line))
                                .boxed(),
                        );
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("pod/{pod}: {e}");
                    }
                }
            }
            let mut all = futures::stream::select_all(streams);
            while let Some((pod, label, line)) = all.next().await {
                match line {
                    Ok(line) => print_line(&label, &line, args.raw)?,
                    Err(e) => {
                        failed += 1;
                        eprintln!("pod/{pod}: {e}");
                    }
                }
            }
        } else {
            for pod in &pods {
                let label = label(pod);
                match session.client.logs(&namespace, pod, &options).await {
                    Ok(lines) => {
                        let mut lines = std::pin::pin!(lines);
                        while let Some(line) = lines.next().await {
                            match line {
                                Ok(line) => print_line(&label, &line, args.raw)?,
                                Err(e) => {
                                    failed += 1;
                                    eprintln!("pod/{pod}: {e}");
                                }
                            }
                        }
                    }
                    Err(e) if pods.len() == 1 => return Err(e.into()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("pod/{pod}: {e}");
                    }
                }
            }
        }
        if failed > 0 {
            bail!(
                "the logs of {failed} of {} pods could not be read in full",
                pods.len()
            );
        }
        Ok(())
    })?
}

fn print_line(label: &str, line: &[u8], raw: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(label.as_bytes())?;
    if raw {
        out.write_all(line)?;
    } else {
        out.write_all(escape_controls(line).as_bytes())?;
    }
    out.write_all(b"\n")?;
    // Followed lines are seen as they come, even through a pipe.
    out.flush()?;
    Ok(())
}

/// A pod's line with every control character but tab escaped (`\x1b`,
/// `\u{9b}`): a pod's output is its own, and must not move the cursor,
/// clear the screen, set the clipboard or pass itself off as another
/// pod's line by overwriting the `[pod/NAME]` prefix.
pub fn escape_controls(line: &[u8]) -> std::borrow::Cow<'_, str> {
    let text = String::from_utf8_lossy(line);
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn options(args: &LogsArgs) -> Result<LogOptions> {
    let tail_lines = match args.tail {
        -1 => None,
        n if n >= 0 => Some(n as u64),
        n => {
            return Err(BadInput(format!("--tail {n}: must be -1 (all) or at least 0")).into());
        }
    };
    let since_seconds = match &args.since {
        None => None,
        Some(text) => {
            let since = skiff_api::quantity::parse_duration(text)
                .map_err(|e| BadInput(format!("--since {text}: {e}")))?;
            if since.is_zero() {
                return Err(BadInput(format!("--since {text}: must be more than 0")).into());
            }
            // Whole seconds, rounded up, so nothing asked for is left out.
            Some(since.as_secs() + u64::from(since.subsec_nanos() > 0))
        }
    };
    if args.follow && args.previous {
        return Err(BadInput(
            "--follow and --previous: a previous run has ended, there is nothing to follow".into(),
        )
        .into());
    }
    if args.limit_bytes == Some(0) {
        return Err(BadInput("--limit-bytes: must be at least 1".into()).into());
    }
    if args.max_log_requests == 0 {
        return Err(BadInput("--max-log-requests: must be at least 1".into()).into());
    }
    Ok(LogOptions {
        follow: args.follow,
        tail_lines,
        since_seconds,
        previous: args.previous,
        timestamps: args.timestamps,
        request_ids: args.request_ids,
        limit_bytes: args.limit_bytes,
    })
}

/// The names of the pods whose logs are asked for, in name order.
async fn pods(session: &Session, namespace: &str, args: &LogsArgs) -> Result<Vec<String>> {
    let names = |list: Vec<Value>| -> Vec<String> {
        let mut names: Vec<String> = list
            .iter()
            .filter_map(|pod| pod["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    match (&args.object, &args.selector) {
        (Some(_), Some(_)) => {
            Err(BadInput("give a pod or deployment, or -l SELECTOR, not both".into()).into())
        }
        (None, None) => Err(BadInput(
            "which logs? give POD, pod/NAME, deployment/NAME or -l SELECTOR".into(),
        )
        .into()),
        (None, Some(selector)) => {
            skiff_api::selector::Selector::parse(selector)
                .map_err(|e| BadInput(format!("-l {selector}: {e}")))?;
            let list = session
                .client
                .list_all(
                    Kind::Pod,
                    Some(namespace),
                    &ListOptions {
                        label_selector: Some(selector.clone()),
                        ..Default::default()
                    },
                )
                .await?;
            let found = names(list.items);
            if found.is_empty() {
                bail!("no pods in namespace {namespace} match -l {selector}");
            }
            Ok(found)
        }
        (Some(object), None) => {
            let (kind, name) = match object.split_once('/') {
                None => (Kind::Pod, object.as_str()),
                Some((kind, name)) => match Kind::parse(kind) {
                    Some(kind @ (Kind::Pod | Kind::Deployment)) if !name.is_empty() => (kind, name),
                    _ => {
                        return Err(BadInput(format!(
                            "{object}: logs are of pod/NAME or deployment/NAME"
                        ))
                        .into());
                    }
                },
            };
            if kind == Kind::Pod {
                return Ok(vec![name.to_owned()]);
            }
            let deployment: Deployment = session
                .client
                .get_as(Kind::Deployment, Some(namespace), name)
                .await?;
            let list = session
                .client
                .list_all(Kind::Pod, Some(namespace), &ListOptions::default())
                .await?;
            let selector = &deployment.spec.selector;
            let found = names(
                list.items
                    .into_iter()
                    .filter(|pod| {
                        let labels = serde_json::from_value(pod["metadata"]["labels"].clone())
                            .unwrap_or_default();
                        selector.matches(&labels)
                    })
                    .collect(),
            );
            if found.is_empty() {
                bail!("deployment {namespace}/{name} has no pods");
            }
            Ok(found)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(escape_controls(b"plain\ttext"), "plain\ttext");
        assert_eq!(
            escape_controls(b"\r\x1b[2K[pod/db-0] ok"),
            "\\x0d\\x1b[2K[pod/db-0] ok"
        );
        // C1 controls (CSI as one character), DEL and OSC 52.
        assert_eq!(
            escape_controls("a\u{9b}2Jb\x7f".as_bytes()),
            "a\\u{9b}2Jb\\x7f"
        );
        assert_eq!(
            escape_controls(b"\x1b]52;c;aGk=\x07"),
            "\\x1b]52;c;aGk=\\x07"
        );
        // Invalid UTF-8 is replaced, as the node's records already are.
        assert_eq!(escape_controls(b"a\xffb"), "a\u{fffd}b");
    }
}
