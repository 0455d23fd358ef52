//! HTTP operators: `http.request` and `http.download`.

use flowctl_engine::Registry;

/// Adds the HTTP operators.
pub fn register(_registry: &mut Registry) {}
