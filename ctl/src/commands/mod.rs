//! One module per verb; each exposes `run`.

pub(crate) mod explain;
pub(crate) mod validate;
pub(crate) mod version;
