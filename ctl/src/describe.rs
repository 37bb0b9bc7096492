//! `skiff describe`: kubectl-style descriptions of objects.
