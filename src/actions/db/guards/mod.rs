//! The guards: `db.idle` and `db.writes`.

pub mod idle;
pub mod writes;
