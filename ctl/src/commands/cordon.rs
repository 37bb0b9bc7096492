//! `skiff cordon NODE…` and `skiff uncordon NODE…`: a merge patch of the Node's
//! `spec.unschedulable`, as kubectl's `CordonHelper` does.

use std::process::ExitCode;

use serde_json::{Value, json};
use skiff_api::kind;

use super::{Context, finish};
use crate::client::{PatchType, ResourcePath};

/// Runs `skiff cordon` (`unschedulable`) or `skiff uncordon` (not).
pub(crate) async fn run(
    ctx: &Context,
    nodes: &[String],
    unschedulable: bool,
) -> anyhow::Result<ExitCode> {
    let mut errors = Vec::new();
    for node in nodes {
        match set_unschedulable(ctx, node, unschedulable).await {
            Ok(changed) => println!("{}", line(node, unschedulable, changed)),
            Err(error) => errors.push(error),
        }
    }
    Ok(finish(&errors))
}

/// What kubectl prints for a node: `node/N cordoned`, `node/N already uncordoned`…
pub(crate) fn line(node: &str, unschedulable: bool, changed: bool) -> String {
    let verb = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    if changed {
        format!("node/{node} {verb}")
    } else {
        format!("node/{node} already {verb}")
    }
}

/// Sets the node's `spec.unschedulable`; `false` when it already was as asked (nothing
/// is written then).
pub(crate) async fn set_unschedulable(
    ctx: &Context,
    node: &str,
    unschedulable: bool,
) -> anyhow::Result<bool> {
    let path = ResourcePath::object(&kind::NODE, None, node).to_string();
    let current = ctx.client.get(&path, &[]).await?;
    let is_unschedulable = current["spec"]["unschedulable"]
        .as_bool()
        .unwrap_or_default();
    if is_unschedulable == unschedulable {
        return Ok(false);
    }
    // kubectl's two-way patch drops the field when uncordoning (`omitempty` false).
    let value = if unschedulable {
        Value::Bool(true)
    } else {
        Value::Null
    };
    let patch = json!({"spec": {"unschedulable": value}});
    ctx.client
        .patch(&path, &[], PatchType::Merge, &patch)
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_kubectl() {
        assert_eq!(line("n1", true, true), "node/n1 cordoned");
        assert_eq!(line("n1", true, false), "node/n1 already cordoned");
        assert_eq!(line("n1", false, true), "node/n1 uncordoned");
        assert_eq!(line("n1", false, false), "node/n1 already uncordoned");
    }
}
