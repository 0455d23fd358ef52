//! Splits a SQL script into its statements, the way each server's own client does: a `;` ends a
//! statement only outside strings, quoted identifiers, comments and (PostgreSQL) dollar-quoted
//! bodies, so a function body or a string holding `;` stays whole.
//!
//! Statements are sent one at a time so that `sql.execute` can report rows affected per
//! statement and say which statement failed, with its line in the script.

/// Which server's lexical rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: `''` doubling, `E'..'` backslash escapes, `$tag$..$tag$`, nested `/* */`.
    Postgres,
    /// MySQL and MariaDB: backslash escapes in `'..'` and `".."`, backtick identifiers, `#` and
    /// `-- ` comments.
    Mysql,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement's text, without the `;` that ended it and without surrounding whitespace.
    pub text: String,
    /// The line of the script (1-based) where the statement starts.
    pub line: usize,
}

/// A script that cannot be split: something opened and never closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    /// What was left open.
    pub what: &'static str,
    /// The line (1-based) where it opened.
    pub line: usize,
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the SQL has an unterminated {} starting at line {}", self.what, self.line)
    }
}

/// Splits `sql` into statements. Statements made only of comments and whitespace are dropped.
pub fn split(sql: &str, dialect: Dialect) -> Result<Vec<Statement>, SplitError> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut line = 1;
    // Whether the current statement has anything besides comments and whitespace, and where.
    let mut content_line: Option<usize> = None;
    let mut i = 0;
    let n = bytes.len();
    let push = |from: usize, to: usize, first_line: Option<usize>, statements: &mut Vec<Statement>| {
        if let Some(line) = first_line {
            let text = sql[from..to].trim();
            if !text.is_empty() {
                statements.push(Statement { text: text.to_string(), line });
            }
        }
    };
    while i < n {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b';' => {
                push(start, i, content_line, &mut statements);
                content_line = None;
                i += 1;
                start = i;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-')
                && (dialect == Dialect::Postgres || bytes.get(i + 2).is_none_or(|b| b.is_ascii_whitespace() || b.is_ascii_control())) =>
            {
                while i < n && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' if dialect == Dialect::Mysql => {
                while i < n && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let opened = line;
                // MySQL's `/*! ... */` holds SQL the server runs: it is content.
                if dialect == Dialect::Mysql && bytes.get(i + 2) == Some(&b'!') {
                    content_line.get_or_insert(line);
                }
                let mut depth = 1;
                i += 2;
                loop {
                    if i >= n {
                        return Err(SplitError { what: "/* comment", line: opened });
                    }
                    match bytes[i] {
                        b'\n' => {
                            line += 1;
                            i += 1;
                        }
                        b'*' if bytes.get(i + 1) == Some(&b'/') => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        b'/' if dialect == Dialect::Postgres && bytes.get(i + 1) == Some(&b'*') => {
                            depth += 1;
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'\'' | b'"' | b'`' => {
                content_line.get_or_insert(line);
                let backslash = match dialect {
                    Dialect::Mysql => c != b'`',
                    // E'...' (or e'...') strings take backslash escapes; the E must start a word.
                    Dialect::Postgres => {
                        c == b'\''
                            && i > 0
                            && matches!(bytes[i - 1], b'E' | b'e')
                            && (i < 2 || !(bytes[i - 2].is_ascii_alphanumeric() || bytes[i - 2] == b'_'))
                    }
                };
                if dialect == Dialect::Postgres && c == b'`' {
                    i += 1;
                    continue;
                }
                let opened = line;
                i += 1;
                loop {
                    if i >= n {
                        let what = match c {
                            b'\'' => "string",
                            b'`' => "`identifier`",
                            _ if dialect == Dialect::Mysql => "\"string\"",
                            _ => "\"identifier\"",
                        };
                        return Err(SplitError { what, line: opened });
                    }
                    let b = bytes[i];
                    if b == b'\n' {
                        line += 1;
                    }
                    if backslash && b == b'\\' {
                        if bytes.get(i + 1) == Some(&b'\n') {
                            line += 1;
                        }
                        i += 2;
                        continue;
                    }
                    if b == c {
                        if bytes.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
            }
            b'$' if dialect == Dialect::Postgres => {
                content_line.get_or_insert(line);
                // `$tag$` where tag is empty or an identifier; `$1` is a parameter.
                let preceded_by_word = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] >= 0x80);
                let mut j = i + 1;
                while j < n && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_' || bytes[j] >= 0x80) {
                    j += 1;
                }
                let tag_ok = !preceded_by_word && j < n && bytes[j] == b'$' && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !tag_ok {
                    i += 1;
                    continue;
                }
                let tag = &sql[i..=j];
                let opened = line;
                let body_start = j + 1;
                match sql[body_start..].find(tag) {
                    Some(offset) => {
                        line += sql[body_start..body_start + offset].bytes().filter(|&b| b == b'\n').count();
                        i = body_start + offset + tag.len();
                    }
                    None => return Err(SplitError { what: "dollar-quoted string", line: opened }),
                }
            }
            _ => {
                if !c.is_ascii_whitespace() {
                    content_line.get_or_insert(line);
                }
                i += 1;
            }
        }
    }
    push(start, n, content_line, &mut statements);
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str, dialect: Dialect) -> Vec<String> {
        split(sql, dialect).unwrap().into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_on_semicolons_and_drops_empty_statements() {
        assert_eq!(texts("select 1; select 2;;\n  ; select 3", Dialect::Postgres), ["select 1", "select 2", "select 3"]);
    }

    #[test]
    fn semicolons_inside_strings_identifiers_and_comments_do_not_split() {
        let sql = "insert into t values ('a;b', 'it''s;'); -- a; comment\nselect \"x;y\" from t /* c; */; select 2";
        assert_eq!(
            texts(sql, Dialect::Postgres),
            ["insert into t values ('a;b', 'it''s;')", "-- a; comment\nselect \"x;y\" from t /* c; */", "select 2"]
        );
    }

    #[test]
    fn a_statement_of_comments_only_is_dropped() {
        assert_eq!(texts("select 1; -- the end;\n/* nothing; */", Dialect::Postgres), ["select 1"]);
        assert_eq!(texts("# only a comment;\nselect 1", Dialect::Mysql), ["# only a comment;\nselect 1"]);
    }

    #[test]
    fn postgres_dollar_quoted_bodies_stay_whole() {
        let sql = "create function f() returns int as $$ begin return 1; end; $$ language plpgsql;\n\
                   do $body$ begin perform 1; end $body$; select $1";
        assert_eq!(
            texts(sql, Dialect::Postgres),
            [
                "create function f() returns int as $$ begin return 1; end; $$ language plpgsql",
                "do $body$ begin perform 1; end $body$",
                "select $1"
            ]
        );
    }

    #[test]
    fn postgres_nested_comments_and_escape_strings() {
        assert_eq!(texts("select /* a /* b; */ c; */ 1; select E'x\\';y'; select 'a\\'; select 2", Dialect::Postgres), [
            "select /* a /* b; */ c; */ 1",
            "select E'x\\';y'",
            "select 'a\\'",
            "select 2"
        ]);
    }

    #[test]
    fn mysql_backslash_escapes_backticks_and_hash_comments() {
        let sql = "insert into `a;b` values ('x\\';y', \"q\\\";\"); # c;\nselect 1; select 2 -- c;\n; select 3--1;";
        assert_eq!(
            texts(sql, Dialect::Mysql),
            ["insert into `a;b` values ('x\\';y', \"q\\\";\")", "# c;\nselect 1", "select 2 -- c;", "select 3--1"]
        );
    }

    #[test]
    fn each_statement_knows_its_first_line() {
        let statements = split("-- header\n\nselect 1;\n\n  select\n 2;", Dialect::Postgres).unwrap();
        assert_eq!(statements.iter().map(|s| s.line).collect::<Vec<_>>(), [3, 5]);
        let statements = split("select 'a\nb';\nselect $$\n\n$$; select 3", Dialect::Postgres).unwrap();
        assert_eq!(statements.iter().map(|s| s.line).collect::<Vec<_>>(), [1, 3, 5]);
    }

    #[test]
    fn unterminated_things_are_errors_with_their_line() {
        assert_eq!(split("select 1;\nselect 'abc", Dialect::Postgres).unwrap_err().to_string(), "the SQL has an unterminated string starting at line 2");
        assert_eq!(
            split("select $f$ x", Dialect::Postgres).unwrap_err().to_string(),
            "the SQL has an unterminated dollar-quoted string starting at line 1"
        );
        assert_eq!(split("/* x", Dialect::Mysql).unwrap_err().to_string(), "the SQL has an unterminated /* comment starting at line 1");
        assert_eq!(split("select `x", Dialect::Mysql).unwrap_err().to_string(), "the SQL has an unterminated `identifier` starting at line 1");
    }
}
