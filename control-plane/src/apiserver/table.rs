//! `meta/v1 Table` rendering: the columns kubectl prints for each kind.
