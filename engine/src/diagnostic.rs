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
    /// For the line that closes a file's list when compile found more problems than it lists:
    /// how many it left out (0 for every other diagnostic).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The longest message or hint a diagnostic keeps, in characters. Messages quote what the file
/// says (a key, an id, a value); a file can make those as long as it likes, and its report must
/// stay readable and small.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// The most names a hint lists ("valid keys: ...", "tasks in this DAG: ...") before "and N more".
pub const MAX_LISTED_NAMES: usize = 20;

/// The widest part of a source line a rendering shows, in characters, around the column.
const MAX_SHOWN_LINE: usize = 120;

/// `text` cut to [`MAX_MESSAGE_CHARS`], keeping its start and its end (where a "did you mean"
/// or a count usually is).
fn clip(text: String) -> String {
    let count = text.chars().count();
    if count <= MAX_MESSAGE_CHARS {
        return text;
    }
    let half = MAX_MESSAGE_CHARS / 2 - 10;
    let head: String = text.chars().take(half).collect();
    let tail: String = text.chars().skip(count - half).collect();
    format!("{head} [... {} characters ...] {tail}", count - 2 * half)
}

/// Names joined with ", ", at most [`MAX_LISTED_NAMES`] of them, then "and N more".
pub fn list_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut shown = Vec::new();
    let mut more = 0usize;
    for name in names {
        if shown.len() < MAX_LISTED_NAMES {
            shown.push(name);
        } else {
            more += 1;
        }
    }
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
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
            message: clip(message.into()),
            hint: None,
            omitted: 0,
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
        self.hint = Some(clip(hint.into()));
        self
    }

    /// Sets the hint, or none.
    pub fn with_hint_opt(mut self, hint: Option<&str>) -> Self {
        self.hint = hint.map(|h| clip(h.to_string()));
        self
    }

    /// How many problems this diagnostic stands for: itself, or the ones it says were left out.
    pub fn count(&self) -> usize {
        self.omitted.max(1)
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

    /// The one-line form, then the source line with a caret under the spot, then the hint. A long
    /// line is shown around the column only, so a file written on one line of a megabyte prints a
    /// line of a terminal's width.
    pub fn render(&self, source: Option<&str>) -> String {
        let mut out = self.short();
        out.push('\n');
        // A byte order mark is not part of the text compile read, nor of what an editor shows.
        let source = source.map(|s| s.strip_prefix('\u{feff}').unwrap_or(s));
        if let Some(full_line) = source.and_then(|s| s.lines().nth(self.line.saturating_sub(1))) {
            let column = self.column.saturating_sub(1);
            let skip = column.saturating_sub(MAX_SHOWN_LINE / 2);
            let mut line_text: String = full_line.chars().skip(skip).take(MAX_SHOWN_LINE).collect();
            let mut caret_at = column - skip;
            if skip > 0 {
                line_text.insert_str(0, "...");
                caret_at += 3;
            }
            if full_line.chars().count() > skip + MAX_SHOWN_LINE {
                line_text.push_str("...");
            }
            let line_text = line_text.as_str();
            let number = self.line.to_string();
            let gutter = " ".repeat(number.len());
            let caret_pad: String =
                line_text.chars().take(caret_at).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
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

/// The most work one suggestion may take, in cells of the edit-distance tables (a million cells
/// is a few milliseconds): enough to compare a name with thousands of short candidates, and a bound
/// on what a file of huge names or thousands of tasks can make a suggestion cost.
const MAX_SUGGESTION_CELLS: usize = 1 << 20;

/// The closest candidate to `input`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input_len = input.chars().count();
    let mut budget = MAX_SUGGESTION_CELLS;
    let mut best: Option<(&str, usize)> = None;
    for candidate in candidates {
        let len = candidate.chars().count();
        let threshold = len.max(input_len) / 3;
        // The distance is at least the difference in length: most candidates go without a table.
        if len.abs_diff(input_len) > threshold {
            continue;
        }
        let cells = (len + 2) * (input_len + 2);
        if cells > budget {
            break;
        }
        budget -= cells;
        let distance = strsim::damerau_levenshtein(input, candidate);
        if distance <= threshold && best.is_none_or(|(_, d)| distance < d) {
            best = Some((candidate, distance));
        }
    }
    best.map(|(c, _)| c)
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
    fn long_lines_are_shown_around_the_column() {
        let line = format!("{}BAD{}", "x".repeat(5000), "y".repeat(5000));
        let d = Diagnostic::error("a.yaml", Pos { line: 1, col: 5001 }, "bad");
        let text = d.render(Some(&line));
        let shown = text.lines().nth(2).unwrap();
        assert!(shown.len() < 140, "{shown}");
        assert!(shown.starts_with("1 | ...x") && shown.ends_with("y..."), "{shown}");
        let caret = text.lines().nth(3).unwrap();
        assert_eq!(caret.find('^').unwrap(), shown.find("BAD").unwrap(), "{text}");
    }

    #[test]
    fn a_byte_order_mark_does_not_shift_the_caret() {
        let d = Diagnostic::error("a.yaml", Pos { line: 1, col: 6 }, "bad");
        assert!(d.render(Some("\u{feff}dag: Bad\n")).contains("1 | dag: Bad\n  |      ^\n"));
    }

    #[test]
    fn hints_list_a_bounded_number_of_names() {
        let names: Vec<String> = (0..25).map(|i| format!("t{i}")).collect();
        let listed = list_names(names.iter().map(String::as_str));
        assert!(listed.starts_with("t0, t1, ") && listed.ends_with("t19 and 5 more"), "{listed}");
        assert_eq!(list_names(["a", "b"]), "a, b");
    }

    #[test]
    fn suggestions_take_bounded_work() {
        // Candidates far in length are never compared, so a huge input costs nothing.
        let huge = "x".repeat(1_000_000);
        assert_eq!(did_you_mean(&huge, ["extract", "load"]), None);
        // Among a million long candidates, the work stops at its bound instead of running on.
        let started = std::time::Instant::now();
        let candidates: Vec<String> = (0..1_000_000).map(|i| format!("{i:0>100}")).collect();
        let _ = did_you_mean(&"9".repeat(100), candidates.iter().map(String::as_str));
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("extrct", ["extract", "load"]), Some("extract"));
        assert_eq!(did_you_mean("zzz", ["extract", "load"]), None);
    }
}
