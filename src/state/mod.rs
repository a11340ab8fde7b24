//! Where a migration's state lives: `.cutover/` beside the runbook (the default), or an S3
//! prefix a team shares (`s3://BUCKET/PREFIX`), mirrored locally.

pub mod s3;

pub use crate::runbook::Backend;
