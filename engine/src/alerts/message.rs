//! What an alert says: the facts of one event, and the shapes they are sent in (an email's
//! subject and plain-text body, flowctl's webhook JSON, Slack's incoming-webhook message).
//!
//! Everything here is pure: the dispatcher gathers the facts (the attempt log's tail, the run's
//! tasks) and masks them; this module only lays them out, so every shape says the same thing.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::dag::AlertEvent;

/// How many lines of the attempt log a message carries.
pub const LOG_TAIL_LINES: usize = 50;

/// At most this much of the end of a log file is read for its tail.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// The facts of one event.
#[derive(Debug, Clone)]
pub struct AlertFacts {
    /// What happened.
    pub event: AlertEvent,
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// The run's logical date.
    pub logical_date: DateTime<Utc>,
    /// For task events: the task.
    pub task: Option<TaskFacts>,
    /// For run events: every task of the run, in the DAG's order.
    pub tasks: Vec<TaskLine>,
    /// The run's duration, for run events.
    pub run_duration: Option<Duration>,
    /// A link to the run in the web UI, when `alerts.ui_url` is configured.
    pub run_url: Option<String>,
}

/// A task event's task.
#[derive(Debug, Clone)]
pub struct TaskFacts {
    /// The task.
    pub task_id: String,
    /// Its operator.
    pub operator: String,
    /// The attempt's try number.
    pub try_number: u32,
    /// The tries allowed.
    pub max_tries: u32,
    /// How long the attempt ran.
    pub duration: Option<Duration>,
    /// The error, masked.
    pub error: Option<String>,
    /// The attempt log's path.
    pub log_path: PathBuf,
    /// The last lines of the attempt log; `None` when the attempt left no log file.
    pub log_tail: Option<Vec<String>>,
}

/// One task of a run, for run events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLine {
    /// The task.
    pub task_id: String,
    /// Its state's name.
    pub state: String,
    /// `try/max`.
    pub tries: String,
    /// The first line of its error.
    pub error: String,
}

/// The event's name in DAG files (`failure`, `run_success`...).
pub fn event_name(event: AlertEvent) -> &'static str {
    AlertEvent::ALL.iter().find(|(e, _)| *e == event).map_or("", |(_, n)| n)
}

/// A duration as the CLI shows it: `850ms`, `12.3s`.
pub fn short_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The link to a run: `<ui_url>/dags/<dag>/runs/<run>`, each id percent-encoded.
pub fn run_url(ui_url: &str, dag_id: &str, run_id: &str) -> String {
    format!("{}/dags/{}/runs/{}", ui_url.trim_end_matches('/'), encode_segment(dag_id), encode_segment(run_id))
}

fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The last `LOG_TAIL_LINES` lines of a log file; `None` when there is no file.
pub fn log_tail(path: &Path) -> Option<Vec<String>> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut mid-line
    }
    let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
    Some(lines[skip..].iter().map(|l| l.to_string()).collect())
}

impl AlertFacts {
    /// The email subject, also the first line of every other shape.
    pub fn subject(&self) -> String {
        match &self.task {
            Some(task) => {
                let word = match self.event {
                    AlertEvent::Retry => "RETRY",
                    AlertEvent::Success => "SUCCEEDED",
                    _ => "FAILED",
                };
                format!(
                    "[flowctl] {word} {}.{} (run {}, try {} of {})",
                    self.dag_id, task.task_id, self.run_id, task.try_number, task.max_tries
                )
            }
            None => {
                let word = if self.event == AlertEvent::RunSuccess { "RUN SUCCEEDED" } else { "RUN FAILED" };
                format!("[flowctl] {word} {} (run {})", self.dag_id, self.run_id)
            }
        }
    }

    /// One sentence saying what happened.
    pub fn headline(&self) -> String {
        match &self.task {
            Some(t) => {
                let what = match self.event {
                    AlertEvent::Retry => format!("failed on try {} of {} and will be retried", t.try_number, t.max_tries),
                    AlertEvent::Success => format!("succeeded on try {} of {}", t.try_number, t.max_tries),
                    _ => format!("failed on try {} of {}; it will not be retried", t.try_number, t.max_tries),
                };
                format!("Task {} of DAG {} {what}.", t.task_id, self.dag_id)
            }
            None => {
                let what = if self.event == AlertEvent::RunSuccess { "succeeded" } else { "failed" };
                format!("Run {} of DAG {} {what}.", self.run_id, self.dag_id)
            }
        }
    }

    fn date(&self) -> String {
        self.logical_date.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// The facts as label/value pairs, in the order every shape shows them.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("DAG", self.dag_id.clone())];
        if let Some(t) = &self.task {
            fields.push(("Task", format!("{} ({})", t.task_id, t.operator)));
        }
        fields.push(("Run", self.run_id.clone()));
        fields.push(("Logical date", self.date()));
        if let Some(t) = &self.task {
            fields.push(("Try", format!("{} of {}", t.try_number, t.max_tries)));
            if let Some(d) = t.duration {
                fields.push(("Duration", short_duration(d)));
            }
            if let Some(error) = t.error.as_deref().filter(|e| !e.is_empty()) {
                fields.push(("Error", error.to_string()));
            }
        } else if let Some(d) = self.run_duration {
            fields.push(("Duration", short_duration(d)));
        }
        if let Some(url) = &self.run_url {
            fields.push(("Run page", url.clone()));
        }
        if let Some(t) = &self.task {
            fields.push(("Log file", t.log_path.display().to_string()));
        }
        fields
    }

    /// The plain-text body of an email.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.headline());
        for (label, value) in self.fields() {
            let label = format!("{label}:");
            let mut lines = value.lines();
            out.push_str(&format!("{label:<14}{}\n", lines.next().unwrap_or_default()));
            for more in lines {
                out.push_str(&format!("{:<14}{more}\n", ""));
            }
        }
        if let Some(t) = &self.task {
            match &t.log_tail {
                Some(lines) if !lines.is_empty() => {
                    out.push_str(&format!("\nLast {} lines of the attempt log:\n\n", lines.len()));
                    for line in lines {
                        out.push_str(&format!("    {line}\n"));
                    }
                }
                _ => out.push_str("\nThe attempt wrote no log.\n"),
            }
        }
        if !self.tasks.is_empty() {
            out.push_str("\nTasks:\n\n");
            let width = |f: fn(&TaskLine) -> &str, title: &str| self.tasks.iter().map(|t| f(t).len()).max().unwrap_or(0).max(title.len());
            let (wt, ws, wr) = (width(|t| &t.task_id, "TASK"), width(|t| &t.state, "STATE"), width(|t| &t.tries, "TRIES"));
            out.push_str(format!("    {:<wt$}  {:<ws$}  {:<wr$}  ERROR", "TASK", "STATE", "TRIES").trim_end());
            out.push('\n');
            for t in &self.tasks {
                let row = format!("    {:<wt$}  {:<ws$}  {:<wr$}  {}", t.task_id, t.state, t.tries, t.error);
                out.push_str(row.trim_end());
                out.push('\n');
            }
        }
        out.push_str("\n-- \nSent by flowctl. The DAG's `alerts:` section decides who gets these messages.\n");
        out
    }

    /// flowctl's webhook body.
    pub fn json(&self) -> Value {
        let mut body = json!({
            "source": "flowctl",
            "event": event_name(self.event),
            "subject": self.subject(),
            "summary": self.headline(),
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "logical_date": self.date(),
            "run_url": self.run_url,
        });
        if let Some(t) = &self.task {
            body["task_id"] = json!(t.task_id);
            body["operator"] = json!(t.operator);
            body["try_number"] = json!(t.try_number);
            body["max_tries"] = json!(t.max_tries);
            body["duration_ms"] = json!(t.duration.map(|d| d.as_millis() as u64));
            body["error"] = json!(t.error);
            body["log_file"] = json!(t.log_path.display().to_string());
            body["log_tail"] = json!(t.log_tail);
        } else {
            body["duration_ms"] = json!(self.run_duration.map(|d| d.as_millis() as u64));
            body["tasks"] = self
                .tasks
                .iter()
                .map(|t| json!({"task_id": t.task_id, "state": t.state, "tries": t.tries, "error": t.error}))
                .collect();
        }
        body
    }

    /// Slack's incoming-webhook message: `text` (the notification) and `blocks`.
    pub fn slack(&self) -> Value {
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": clip(&self.subject(), 150)}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&slack_escape(&self.headline()), 3000)}}),
        ];
        let fields: Vec<Value> = self
            .fields()
            .into_iter()
            .filter(|(label, _)| *label != "Error" && *label != "Run page")
            .take(10)
            .map(|(label, value)| json!({"type": "mrkdwn", "text": clip(&format!("*{label}*\n{}", slack_escape(&value)), 2000)}))
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
        if let Some(error) = self.task.as_ref().and_then(|t| t.error.as_deref()).filter(|e| !e.is_empty()) {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": code_block("*Error*", error)}}));
        }
        if let Some(lines) = self.task.as_ref().and_then(|t| t.log_tail.as_ref()).filter(|l| !l.is_empty()) {
            let title = format!("*Last {} lines of the attempt log*", lines.len());
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": code_block(&title, &lines.join("\n"))}}));
        }
        if !self.tasks.is_empty() {
            let rows: Vec<String> = self.tasks.iter().map(|t| format!("{}  {}  {}  {}", t.task_id, t.state, t.tries, t.error)).collect();
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": code_block("*Tasks*", &rows.join("\n"))}}));
        }
        if let Some(url) = &self.run_url {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("<{url}|Open the run>")}}));
        }
        json!({"text": self.subject(), "blocks": blocks})
    }
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A titled code block that fits a Slack section (3000 characters): the end of `body` is kept,
/// as the end of a log or error is what matters.
fn code_block(title: &str, body: &str) -> String {
    let body = slack_escape(body).replace("```", "'''");
    let room = 3000 - title.len() - 10;
    let kept = if body.chars().count() > room {
        let skip = body.chars().count() - room;
        format!("…{}", body.chars().skip(skip + 1).collect::<String>())
    } else {
        body
    };
    format!("{title}\n```{kept}```")
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> AlertFacts {
        AlertFacts {
            event: AlertEvent::Failure,
            dag_id: "loans".into(),
            run_id: "manual__2024-03-01T00:00:00Z".into(),
            logical_date: "2024-03-01T00:00:00Z".parse().unwrap(),
            task: Some(TaskFacts {
                task_id: "load".into(),
                operator: "shell".into(),
                try_number: 2,
                max_tries: 3,
                duration: Some(Duration::from_millis(1500)),
                error: Some("exit code 3".into()),
                log_path: PathBuf::from("/h/logs/loans/r/load/2.log"),
                log_tail: Some(vec!["line <1>".into(), "line 2".into()]),
            }),
            tasks: vec![],
            run_duration: None,
            run_url: Some(run_url("https://ui.example.com/", "loans", "manual__2024-03-01T00:00:00Z")),
        }
    }

    #[test]
    fn subjects_name_the_event_task_run_and_try() {
        let mut facts = failure();
        assert_eq!(facts.subject(), "[flowctl] FAILED loans.load (run manual__2024-03-01T00:00:00Z, try 2 of 3)");
        facts.event = AlertEvent::Retry;
        assert_eq!(facts.subject(), "[flowctl] RETRY loans.load (run manual__2024-03-01T00:00:00Z, try 2 of 3)");
        facts.event = AlertEvent::Success;
        assert!(facts.subject().starts_with("[flowctl] SUCCEEDED loans.load ("));
        facts.task = None;
        facts.event = AlertEvent::RunFailure;
        assert_eq!(facts.subject(), "[flowctl] RUN FAILED loans (run manual__2024-03-01T00:00:00Z)");
        facts.event = AlertEvent::RunSuccess;
        assert_eq!(facts.subject(), "[flowctl] RUN SUCCEEDED loans (run manual__2024-03-01T00:00:00Z)");
    }

    #[test]
    fn the_body_has_the_facts_the_link_and_the_log_tail() {
        let text = failure().text();
        for expected in [
            "Task load of DAG loans failed on try 2 of 3; it will not be retried.",
            "DAG:          loans\n",
            "Task:         load (shell)\n",
            "Logical date: 2024-03-01T00:00:00Z\n",
            "Try:          2 of 3\n",
            "Error:        exit code 3\n",
            "Run page:     https://ui.example.com/dags/loans/runs/manual__2024-03-01T00%3A00%3A00Z\n",
            "Last 2 lines of the attempt log:\n\n    line <1>\n    line 2\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
    }

    #[test]
    fn slack_messages_have_text_and_escaped_blocks() {
        let slack = failure().slack();
        assert_eq!(slack["text"], failure().subject());
        let blocks = slack["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let all = serde_json::to_string(blocks).unwrap();
        assert!(all.contains("line &lt;1&gt;"), "{all}");
        assert!(all.contains("|Open the run>"), "{all}");
    }

    #[test]
    fn the_tail_is_the_last_lines_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        let text: String = (1..=120).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path).unwrap();
        assert_eq!(tail.len(), LOG_TAIL_LINES);
        assert_eq!((tail[0].as_str(), tail[49].as_str()), ("line 71", "line 120"));
        assert_eq!(log_tail(&dir.path().join("2.log")), None);
    }
}
