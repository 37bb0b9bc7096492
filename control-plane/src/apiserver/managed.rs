//! `metadata.managedFields` on every write: the bridge from typed objects to the
//! field-ownership logic of `skiff_api::managed`.

use skiff_api::Object;
use skiff_api::meta::jiff;

/// The time managedFields entries carry, at second precision as Kubernetes writes it.
pub fn timestamp() -> String {
    let now = super::registry::now_timestamp();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Records that `manager` changed `old` into `new` (an Update operation, through
/// `subresource` if any). Without a manager nothing is recorded.
pub fn record(old: Option<&Object>, new: &mut Object, manager: &str, subresource: Option<&str>) {
    if manager.is_empty() {
        return;
    }
    let old_value = old.map(Object::to_value);
    let mut new_value = new.to_value();
    skiff_api::managed::record_update(
        new.kind(),
        old_value.as_ref(),
        &mut new_value,
        manager,
        subresource,
        &timestamp(),
    );
    let entries = new_value
        .get_mut("metadata")
        .and_then(|m| m.get_mut("managedFields"))
        .map(serde_json::Value::take);
    new.metadata_mut().managed_fields = entries.and_then(|e| serde_json::from_value(e).ok());
}
