//! The three-way merge patch of client-side `skiff apply`.
