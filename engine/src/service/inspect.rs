//! DAG files on their own, before anything is applied: `validate`.

use std::path::PathBuf;

use crate::compile::{compile_paths, discover, Compiled};
use crate::diagnostic::Diagnostic;
use crate::operator::Registry;

/// What compiling some DAG files found.
pub struct Validation {
    /// How many DAG files were found under the paths.
    pub files: usize,
    /// The DAGs and warnings, or every error.
    pub result: Result<Compiled, Vec<Diagnostic>>,
}

/// Compiles the DAG files under `paths` and reports every problem.
pub fn validate(paths: &[PathBuf], registry: &Registry) -> Validation {
    Validation { files: discover(paths).0.len(), result: compile_paths(paths, registry) }
}
