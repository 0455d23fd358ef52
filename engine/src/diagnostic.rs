//! Diagnostics: every problem compile finds, with its place and a way to fix it.
//!
//! A user fixing a DAG should see every mistake in one go. Compile never stops at the first error;
//! it collects [`Diagnostic`]s and the CLI renders them as `path:line:col: error: message`, with the
//! source line, a caret under the spot and a hint, or as JSON for editors and CI.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::yaml::Pos;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The DAG cannot be used.
    Error,
    /// The DAG works, but probably not as meant.
    Warning,
}

/// One problem found in a DAG file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, as the user named it.
    #[schema(value_type = String)]
    pub file: PathBuf,
    /// Line, 1-based.
    pub line: usize,
    /// Column, 1-based.
    pub column: usize,
    /// The task the problem belongs to, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// What is wrong, lower-case, naming the thing.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at a position.
    pub fn error(file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.into(),
            line: pos.line,
            column: pos.col,
            task: None,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at a position.
    pub fn warning(file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(file, pos, message) }
    }

    /// Attaches the task the problem belongs to.
    pub fn in_task(mut self, task: Option<&str>) -> Self {
        self.task = task.map(str::to_string);
        self
    }

    /// Attaches a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The message with the task named first, as the first line of the rendering shows it.
    pub fn headline(&self) -> String {
        match &self.task {
            Some(task) => format!("task \"{task}\": {}", self.message),
            None => self.message.clone(),
        }
    }

    /// `path:line:col: error: message`, the one-line form.
    pub fn short(&self) -> String {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        format!("{}:{}:{}: {level}: {}", self.file.display(), self.line, self.column, self.headline())
    }

    /// The one-line form, then the source line with a caret under the spot, then the hint.
    pub fn render(&self, source: Option<&str>) -> String {
        let mut out = self.short();
        out.push('\n');
        if let Some(line_text) = source.and_then(|s| s.lines().nth(self.line.saturating_sub(1))) {
            let number = self.line.to_string();
            let gutter = " ".repeat(number.len());
            let caret_pad: String = line_text
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{gutter} |");
            let _ = writeln!(out, "{number} | {line_text}");
            let _ = writeln!(out, "{gutter} | {caret_pad}^");
        }
        if let Some(hint) = &self.hint {
            let gutter = " ".repeat(self.line.to_string().len());
            let _ = writeln!(out, "{gutter} = hint: {hint}");
        }
        out
    }
}

/// The closest candidate to `input`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (c, strsim::damerau_levenshtein(input, c)))
        .filter(|(c, distance)| *distance <= c.len().max(input.len()) / 3)
        .min_by_key(|(_, distance)| *distance)
        .map(|(c, _)| c)
}

/// ` (did you mean "x"?)` or nothing.
pub fn suggestion<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(input, candidates).map(|c| format!(" (did you mean \"{c}\"?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_the_column() {
        let d = Diagnostic::error("a.yaml", Pos { line: 2, col: 5 }, "bad thing")
            .in_task(Some("load"))
            .with_hint("do the other thing");
        let text = d.render(Some("dag: x\nfoo: bar\n"));
        assert_eq!(
            text,
            "a.yaml:2:5: error: task \"load\": bad thing\n  |\n2 | foo: bar\n  |     ^\n  = hint: do the other thing\n"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("extrct", ["extract", "load"]), Some("extract"));
        assert_eq!(did_you_mean("zzz", ["extract", "load"]), None);
    }
}
