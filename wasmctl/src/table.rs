//! Tables in kubectl's style: upper-case headers, columns padded to their
//! widest cell and separated by three spaces, per-kind columns.

use serde_json::Value;
use skiff_api::Kind;
use skiff_api::columns;

/// Renders rows (the first is the header) with aligned columns.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The columns of `kind` (`wide` adds more), with NAMESPACE first when
/// listing across namespaces: the API's own columns, in capitals.
pub fn header(kind: Kind, wide: bool, all_namespaces: bool) -> Vec<String> {
    let mut header = Vec::new();
    if all_namespaces && kind.namespaced() {
        header.push("NAMESPACE".to_owned());
    }
    header.extend(
        columns::columns(kind)
            .into_iter()
            .filter(|c| wide || c.priority == 0)
            .map(|c| c.name.to_uppercase()),
    );
    header
}

/// One object's row, matching [`header`].
pub fn row(kind: Kind, object: &Value, wide: bool, all_namespaces: bool) -> Vec<String> {
    let mut row = Vec::new();
    if all_namespaces && kind.namespaced() {
        row.push(
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let shown = columns::columns(kind)
        .into_iter()
        .filter(|c| wide || c.priority == 0)
        .count();
    row.extend(
        columns::cells(kind, object, chrono::Utc::now())
            .into_iter()
            .take(shown),
    );
    row
}

/// Time since `timestamp` the way kubectl prints it: 42s, 5m, 3h, 12d.
pub fn age(timestamp: Option<&str>) -> String {
    columns::age(timestamp, chrono::Utc::now())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_align_like_kubectl() {
        let rows = vec![
            vec!["NAME".into(), "STATUS".into(), "AGE".into()],
            vec!["default".into(), "Active".into(), "5m".into()],
            vec!["kube".into(), "Terminating".into(), "12d".into()],
        ];
        assert_eq!(
            render(&rows),
            "NAME      STATUS        AGE\ndefault   Active        5m\nkube      Terminating   12d\n"
        );
    }

    #[test]
    fn pod_rows_show_readiness_and_reason() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"image": "reg/web:v1", "nodeName": "n1"},
            "status": {"phase": "Running", "reason": "CrashLoopBackOff", "restartCount": 4,
                       "conditions": [{"type": "Ready", "status": "False"}]}
        });
        let row = row(Kind::Pod, &pod, true, true);
        assert_eq!(row[..5], ["shop", "web", "0/1", "CrashLoopBackOff", "4"]);
        assert_eq!(row[6..], ["n1", "reg/web:v1"]);
        assert_eq!(header(Kind::Pod, true, true).len(), row.len());
    }

    #[test]
    fn ages() {
        assert_eq!(age(None), "<unknown>");
        let ago = |secs: i64| (chrono::Utc::now() - chrono::Duration::seconds(secs)).to_rfc3339();
        assert_eq!(age(Some(&ago(30))), "30s");
        assert_eq!(age(Some(&ago(600))), "10m");
        assert_eq!(age(Some(&ago(5 * 3600))), "5h");
        assert_eq!(age(Some(&ago(3 * 86400))), "3d");
    }
}
