//! The SQL text flowctl writes for Redshift: quoting, and the `COPY` and `UNLOAD` statements.
//!
//! Identifiers are double-quoted with inner double quotes doubled; literals are single-quoted with
//! inner single quotes *and backslashes* doubled, because Redshift reads a backslash in a literal
//! as an escape (its `QUOTE_LITERAL` doubles both). So a table called `loans"x`, a path with a
//! quote, or an `UNLOAD` query with `'...'` literals arrive exactly as written.

use serde::Deserialize;

/// `name` as a quoted identifier: `"name"`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A dotted name (`schema.table`, `table`) with each part quoted: `"schema"."table"`.
pub fn qualified(name: &str) -> String {
    name.split('.').map(ident).collect::<Vec<_>>().join(".")
}

/// `text` as a string literal: `'text'`, with `'` and `\` doubled.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Checks a dotted name: one to three non-empty parts (`table`, `schema.table`,
/// `database.schema.table`), each at most 127 bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 3 {
        return Err(format!("\"{name}\" has more than three dotted parts; write table, schema.table or database.schema.table"));
    }
    for part in &parts {
        if part.trim().is_empty() {
            return Err(format!("\"{name}\" has an empty part; write table, schema.table or database.schema.table"));
        }
        if part.len() > 127 {
            return Err(format!("\"{part}\" is longer than Redshift's 127-byte names"));
        }
        if part.contains('\0') {
            return Err(format!("\"{name}\" contains a NUL character"));
        }
    }
    Ok(())
}

/// The IAM role clause: `IAM_ROLE 'arn:...'`, or `IAM_ROLE default` for the cluster's default role.
pub fn iam_role(role: &str) -> String {
    if role.eq_ignore_ascii_case("default") {
        "IAM_ROLE default".to_string()
    } else {
        format!("IAM_ROLE {}", literal(role))
    }
}

/// The file format of a `COPY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "RedshiftCopyFormat")]
pub enum CopyFormat {
    /// Comma-separated values (RFC 4180 quoting).
    #[default]
    Csv,
    /// JSON objects, mapped to columns by name (`jsonpaths: auto`) or by a JSONPaths file.
    Json,
    /// Apache Parquet.
    Parquet,
}

/// Everything after `COPY table (columns)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// The `s3://` prefix or manifest to load.
    pub from: String,
    /// The IAM role Redshift reads S3 with.
    pub iam_role: String,
    /// The format.
    pub format: CopyFormat,
    /// JSON only: `auto`, `auto ignorecase`, or the `s3://` URL of a JSONPaths file.
    pub jsonpaths: Option<String>,
    /// CSV only: the field delimiter.
    pub delimiter: Option<String>,
    /// CSV only: skip the first line of each file.
    pub header: bool,
    /// `DATEFORMAT`.
    pub date_format: Option<String>,
    /// `TIMEFORMAT`.
    pub time_format: Option<String>,
    /// `NULL AS`.
    pub null_as: Option<String>,
    /// The bucket's region when it is not the cluster's.
    pub region: Option<String>,
    /// Options appended as written (`GZIP`, `MAXERROR 10`, `ACCEPTINVCHARS`...).
    pub extra_options: Vec<String>,
}

/// `COPY <table> [(<columns>)] FROM '<from>' IAM_ROLE ... FORMAT AS ... [options]`, where `table`
/// is already quoted.
pub fn copy_sql(table: &str, columns: &[String], options: &CopyOptions) -> String {
    let mut sql = format!("COPY {table}");
    if !columns.is_empty() {
        sql.push_str(&format!(" ({})", columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")));
    }
    sql.push_str(&format!(" FROM {} {}", literal(&options.from), iam_role(&options.iam_role)));
    match options.format {
        CopyFormat::Csv => sql.push_str(" FORMAT AS CSV"),
        CopyFormat::Json => {
            sql.push_str(&format!(" FORMAT AS JSON {}", literal(options.jsonpaths.as_deref().unwrap_or("auto"))));
        }
        CopyFormat::Parquet => sql.push_str(" FORMAT AS PARQUET"),
    }
    if let Some(delimiter) = &options.delimiter {
        sql.push_str(&format!(" DELIMITER AS {}", literal(delimiter)));
    }
    if options.header {
        sql.push_str(" IGNOREHEADER 1");
    }
    if let Some(format) = &options.date_format {
        sql.push_str(&format!(" DATEFORMAT AS {}", literal(format)));
    }
    if let Some(format) = &options.time_format {
        sql.push_str(&format!(" TIMEFORMAT AS {}", literal(format)));
    }
    if let Some(null) = &options.null_as {
        sql.push_str(&format!(" NULL AS {}", literal(null)));
    }
    if let Some(region) = &options.region {
        sql.push_str(&format!(" REGION AS {}", literal(region)));
    }
    for option in &options.extra_options {
        let option = option.trim();
        if !option.is_empty() {
            sql.push(' ');
            sql.push_str(option);
        }
    }
    sql
}

/// How a `COPY` lands in its table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "RedshiftCopyMode")]
pub enum CopyMode {
    /// Add the rows (one `COPY`).
    #[default]
    Append,
    /// Replace the table's rows in one transaction: `DELETE` (Redshift's `TRUNCATE` would commit
    /// on its own), then `COPY`.
    Replace,
    /// Load into a staging table, delete the table's rows whose `key` columns match, insert the
    /// staged rows: all in one transaction.
    Upsert,
}

/// The name of the temporary staging table of an upsert into `table`.
pub fn stage_table(table: &str) -> String {
    let last = table.rsplit('.').next().unwrap_or(table);
    let mut name = format!("flowctl_stage_{last}");
    while name.len() > 127 {
        name.pop();
    }
    name
}

/// The statements of a load in `mode` (one for `append`; a batch, run by the Data API as one
/// transaction, for the others).
pub fn copy_statements(table: &str, columns: &[String], key: &[String], mode: CopyMode, options: &CopyOptions) -> Vec<String> {
    let target = qualified(table);
    match mode {
        CopyMode::Append => vec![copy_sql(&target, columns, options)],
        CopyMode::Replace => vec![
            "BEGIN".to_string(),
            format!("DELETE FROM {target}"),
            copy_sql(&target, columns, options),
            "COMMIT".to_string(),
        ],
        CopyMode::Upsert => {
            let stage = ident(&stage_table(table));
            let matches: Vec<String> = key.iter().map(|k| format!("{target}.{} = {stage}.{}", ident(k), ident(k))).collect();
            let insert = if columns.is_empty() {
                format!("INSERT INTO {target} SELECT * FROM {stage}")
            } else {
                let list = columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
                format!("INSERT INTO {target} ({list}) SELECT {list} FROM {stage}")
            };
            vec![
                "BEGIN".to_string(),
                format!("CREATE TEMP TABLE {stage} (LIKE {target})"),
                copy_sql(&stage, columns, options),
                format!("DELETE FROM {target} USING {stage} WHERE {}", matches.join(" AND ")),
                insert,
                "COMMIT".to_string(),
            ]
        }
    }
}

/// The file format of an `UNLOAD`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "RedshiftUnloadFormat")]
pub enum UnloadFormat {
    /// Comma-separated values.
    #[default]
    Csv,
    /// One JSON object per line.
    Json,
    /// Apache Parquet.
    Parquet,
}

/// Everything an `UNLOAD` needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnloadOptions {
    /// The `SELECT` whose rows are written.
    pub query: String,
    /// The `s3://` prefix of the files.
    pub to: String,
    /// The IAM role Redshift writes S3 with.
    pub iam_role: String,
    /// The format.
    pub format: UnloadFormat,
    /// CSV only: a header line in each file.
    pub header: bool,
    /// CSV only: the field delimiter.
    pub delimiter: Option<String>,
    /// CSV only: `NULL AS`.
    pub null_as: Option<String>,
    /// `PARTITION BY` columns (Hive-style `col=value/` folders).
    pub partition_by: Vec<String>,
    /// Keep the partition columns in the files too (`INCLUDE`).
    pub partition_include: bool,
    /// Write a manifest file listing the data files.
    pub manifest: bool,
    /// Replace files already at the prefix.
    pub allow_overwrite: bool,
    /// Write one file after another (`PARALLEL OFF`) instead of one per slice.
    pub serial: bool,
    /// `MAXFILESIZE` in MB.
    pub max_file_size_mb: Option<u32>,
    /// The bucket's region when it is not the cluster's.
    pub region: Option<String>,
    /// Options appended as written (`ENCRYPTED`, `CLEANPATH`, `EXTENSION 'csv'`...).
    pub extra_options: Vec<String>,
}

/// The query without the trailing `;` UNLOAD's inner query must not have.
pub fn unload_query(query: &str) -> &str {
    query.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// `UNLOAD ('<query>') TO '<to>' IAM_ROLE ... FORMAT AS ... [options]`.
pub fn unload_sql(options: &UnloadOptions) -> String {
    let mut sql = format!(
        "UNLOAD ({}) TO {} {}",
        literal(unload_query(&options.query)),
        literal(&options.to),
        iam_role(&options.iam_role)
    );
    sql.push_str(match options.format {
        UnloadFormat::Csv => " FORMAT AS CSV",
        UnloadFormat::Json => " FORMAT AS JSON",
        UnloadFormat::Parquet => " FORMAT AS PARQUET",
    });
    if let Some(delimiter) = &options.delimiter {
        sql.push_str(&format!(" DELIMITER AS {}", literal(delimiter)));
    }
    if options.header {
        sql.push_str(" HEADER");
    }
    if let Some(null) = &options.null_as {
        sql.push_str(&format!(" NULL AS {}", literal(null)));
    }
    if !options.partition_by.is_empty() {
        let columns = options.partition_by.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        sql.push_str(&format!(" PARTITION BY ({columns}){}", if options.partition_include { " INCLUDE" } else { "" }));
    }
    if options.manifest {
        sql.push_str(" MANIFEST");
    }
    if options.allow_overwrite {
        sql.push_str(" ALLOWOVERWRITE");
    }
    if options.serial {
        sql.push_str(" PARALLEL OFF");
    }
    if let Some(mb) = options.max_file_size_mb {
        sql.push_str(&format!(" MAXFILESIZE AS {mb} MB"));
    }
    if let Some(region) = &options.region {
        sql.push_str(&format!(" REGION AS {}", literal(region)));
    }
    for option in &options.extra_options {
        let option = option.trim();
        if !option.is_empty() {
            sql.push(' ');
            sql.push_str(option);
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("loans"), "\"loans\"");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(qualified("stage.loans"), "\"stage\".\"loans\"");
        assert_eq!(literal("s3://b/it's"), "'s3://b/it''s'");
        assert_eq!(literal("\\N"), "'\\\\N'");
        assert_eq!(iam_role("default"), "IAM_ROLE default");
        assert_eq!(iam_role("arn:aws:iam::1:role/r"), "IAM_ROLE 'arn:aws:iam::1:role/r'");
    }

    #[test]
    fn names_have_one_to_three_parts() {
        assert!(check_name("loans").is_ok());
        assert!(check_name("dw.stage.loans").is_ok());
        assert!(check_name("a.b.c.d").unwrap_err().contains("more than three"));
        assert!(check_name("stage.").unwrap_err().contains("empty part"));
    }

    #[test]
    fn unload_drops_the_trailing_semicolon() {
        assert_eq!(unload_query("SELECT 1 ;\n"), "SELECT 1");
    }

    #[test]
    fn the_stage_table_is_named_after_the_table() {
        assert_eq!(stage_table("stage.loans"), "flowctl_stage_loans");
        assert_eq!(stage_table(&"x".repeat(200)).len(), 127);
    }
}
