//! Integration tests of the node agent against the real kernel and a real local registry.

mod image;
mod probe;
mod runtime;
