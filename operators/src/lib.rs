//! flowctl's operator plugins, one module per operator.
//!
//! Each module has a `Config` (the task's `with:`, `#[serde(deny_unknown_fields)]`, checked at
//! compile time) and an [`Operator`](flowctl_engine::Operator) implementation. [`registry`] builds
//! the registry the binary hands to the engine; AWS operators join it behind their cargo features.

pub mod noop;
pub mod shell;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "sql")]
pub mod sql;

use flowctl_engine::Registry;

/// Every operator this build includes.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(noop::Noop).register(shell::Shell);
    #[cfg(feature = "aws")]
    aws::register(&mut registry);
    #[cfg(feature = "http")]
    http::register(&mut registry);
    #[cfg(feature = "sql")]
    sql::register(&mut registry);
    registry
}

#[cfg(test)]
mod tests {
    /// Compile errors send users to an operator's page: every operator of this build has one.
    #[test]
    fn every_operator_has_its_documentation_page() {
        let registry = super::registry();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for name in registry.names() {
            let docs = registry.get(name).expect("registered").docs();
            let page = root.join(&docs);
            let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{name}: its page {docs} cannot be read: {e}"));
            assert!(text.contains(name), "{name}: its page {docs} does not mention it");
        }
    }
}
