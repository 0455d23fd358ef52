//! SQL operators for MySQL/MariaDB and PostgreSQL: `sql.execute`, `sql.load`, `sql.export`.

use flowctl_engine::Registry;

/// Adds the SQL operators, and the `mysql` and `postgres` connection testers.
pub fn register(_registry: &mut Registry) {}
