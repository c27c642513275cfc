//! `wasmctl get tokens` and `wasmctl delete token ID...`: a namespace's
//! tokens (or, with `-A`/`--cluster-scope`, every token) by id, role,
//! expiry and last use. Secrets are never shown again after creation.

use anyhow::Result;

use crate::cluster::{Session, block_on};
use crate::table;

/// Whether a kind word names tokens, which are not objects of the API.
pub fn named(word: &str) -> bool {
    matches!(word, "token" | "tokens")
}

/// Lists tokens of `namespace`, or all when `None` (cluster admins).
pub fn list(session: &Session, namespace: Option<&str>, output_json: bool) -> Result<()> {
    let tokens = block_on(session.client.list_tokens(namespace))??;
    if output_json {
        println!("{}", serde_json::to_string_pretty(&tokens)?);
        return Ok(());
    }
    let mut rows = vec![
        [
            "ID",
            "ROLE",
            "NAMESPACE",
            "EXPIRES",
            "LAST USED",
            "AGE",
            "DESCRIPTION",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for token in tokens {
        let role = match &token.node_name {
            Some(node) => format!("node/{node}"),
            None => token.role.clone(),
        };
        rows.push(vec![
            token.id,
            role,
            token.namespace.unwrap_or_else(|| "-".into()),
            token.expires_at.unwrap_or_else(|| "never".into()),
            token
                .last_used_at
                .as_deref()
                .map(|t| format!("{} ago", table::age(Some(t))))
                .unwrap_or_else(|| "never".into()),
            table::age(Some(&token.created_at)),
            token.description,
        ]);
    }
    print!("{}", table::render(&rows));
    Ok(())
}

/// Deletes tokens by id, in `namespace` or, when `None`, at cluster scope.
pub fn delete(session: &Session, namespace: Option<&str>, ids: &[String]) -> Result<()> {
    block_on(async {
        for id in ids {
            session.client.delete_token(namespace, id).await?;
            println!("token \"{id}\" deleted");
        }
        Ok(())
    })?
}
