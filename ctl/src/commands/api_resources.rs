//! `skiff api-resources`: the resource types discovery reports, in kubectl's columns.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use super::Context;
use crate::ApiResourcesArgs;
use crate::printers;

/// One row: a resource of one group/version.
struct Resource {
    group: String,
    group_version: String,
    name: String,
    short_names: Vec<String>,
    namespaced: bool,
    kind: String,
    verbs: Vec<String>,
    categories: Vec<String>,
}

/// Runs `skiff api-resources`.
pub(crate) async fn run(ctx: &Context, args: ApiResourcesArgs) -> anyhow::Result<ExitCode> {
    let (wide, names_only) = match args.output.as_deref() {
        None | Some("") => (false, false),
        Some("wide") => (true, false),
        Some("name") => (false, true),
        Some(other) => bail!("--output {other} is not available"),
    };
    let mut resources = Vec::new();
    // The core group's versions, then every group's preferred version.
    let core = ctx.client.get("/api", &[]).await?;
    let mut group_versions: Vec<(String, String)> = strings(core.get("versions"))
        .into_iter()
        .map(|version| (String::new(), version))
        .collect();
    let groups = ctx.client.get("/apis", &[]).await?;
    for group in groups
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = group
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(preferred) = group
            .pointer("/preferredVersion/groupVersion")
            .and_then(Value::as_str)
        {
            group_versions.push((name.to_owned(), preferred.to_owned()));
        }
    }
    for (group, group_version) in group_versions {
        let path = if group.is_empty() {
            format!("/api/{group_version}")
        } else {
            format!("/apis/{group_version}")
        };
        let list = ctx.client.get(&path, &[]).await?;
        for resource in list
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = resource
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if name.contains('/') {
                continue;
            }
            resources.push(Resource {
                group: group.clone(),
                group_version: group_version.clone(),
                name: name.to_owned(),
                short_names: strings(resource.get("shortNames")),
                namespaced: resource
                    .get("namespaced")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                kind: resource
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                verbs: strings(resource.get("verbs")),
                categories: strings(resource.get("categories")),
            });
        }
    }
    // kubectl's order: by group (core first), then by name.
    resources.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
    if names_only {
        for resource in &resources {
            if resource.group.is_empty() {
                println!("{}", resource.name);
            } else {
                println!("{}.{}", resource.name, resource.group);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    if !args.no_headers {
        let mut header = vec!["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"];
        if wide {
            header.extend(["VERBS", "CATEGORIES"]);
        }
        rows.push(header.into_iter().map(str::to_owned).collect());
    }
    for resource in &resources {
        let mut row = vec![
            resource.name.clone(),
            resource.short_names.join(","),
            resource.group_version.clone(),
            resource.namespaced.to_string(),
            resource.kind.clone(),
        ];
        if wide {
            row.push(resource.verbs.join(","));
            row.push(resource.categories.join(","));
        }
        rows.push(row);
    }
    print!("{}", printers::tabulate(&rows));
    Ok(ExitCode::SUCCESS)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
