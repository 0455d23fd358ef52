//! Templating: every string under a task's `with:` is a minijinja template.
//!
//! One [`environment`] serves compile and the runtime, so a template that passes compile parses
//! the same way when it renders. Undefined values are errors (strict), as a data engineer would
//! rather see a failed task than a command run with an empty bucket name. Compile uses
//! [`check`] to catch, before anything runs, a template that does not parse, that names a
//! variable the context will not have, a parameter the DAG does not declare, or the outputs of a
//! task that is not upstream.

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};

/// The variables every template may use, with what each holds.
pub const CONTEXT_VARIABLES: &[(&str, &str)] = &[
    ("ds", "the logical date as YYYY-MM-DD"),
    ("ds_nodash", "the logical date as YYYYMMDD"),
    ("ts", "the logical date as an RFC 3339 timestamp"),
    ("logical_date", "the logical date (start of the data interval), RFC 3339"),
    ("data_interval_start", "the start of the run's data interval, RFC 3339"),
    ("data_interval_end", "the end of the run's data interval, RFC 3339"),
    ("run_id", "the run's id"),
    ("dag_id", "the DAG's id"),
    ("task_id", "the task's id"),
    ("try_number", "the attempt's number, 1 for the first"),
    ("params", "the run's parameters: params.<name>"),
    ("env", "environment variables: env.<NAME>"),
    ("tasks", "upstream outputs: tasks.<id>.outputs.<key>"),
];

/// The environment templates are parsed and rendered in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

/// Whether a string holds template syntax at all; plain strings skip parsing.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// What a template may refer to, for [`check`].
pub struct Scope<'a> {
    /// The DAG's declared parameters.
    pub params: &'a BTreeSet<String>,
    /// Every task id in the DAG.
    pub all_tasks: &'a BTreeSet<String>,
    /// Whether a task is upstream (directly or not) of the task the template belongs to.
    pub upstream: &'a dyn Fn(&str) -> bool,
    /// Whether problems carry a "did you mean": off once compile lists no more errors for the
    /// file, since a suggestion among thousands of names is work nobody would see.
    pub suggest: bool,
}

/// A problem with one template, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// ` (did you mean "x"?)` when the scope asks for suggestions.
fn suggest<'a>(scope: &Scope<'_>, input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    if scope.suggest {
        crate::diagnostic::suggestion(input, candidates)
    } else {
        String::new()
    }
}

/// Parses `text` and checks every variable it reads against `scope`.
pub fn check(env: &Environment<'_>, text: &str, scope: &Scope<'_>) -> Vec<TemplateProblem> {
    let template = match env.template_from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string());
            let line = match e.line() {
                Some(line) if text.lines().count() > 1 => format!(" (line {line} of the template)"),
                _ => String::new(),
            };
            return vec![TemplateProblem {
                message: format!("template does not parse: {detail}{line}"),
                hint: Some(
                    "fix the {{ ... }} / {% ... %} syntax; for text that only looks like a template (a shell `${#var}`, a literal `{{`), wrap it in {% raw %}...{% endraw %}"
                        .into(),
                ),
            }];
        }
    };
    let globals: BTreeSet<&str> = env.globals().map(|(name, _)| name).collect();
    let names: BTreeSet<String> = template.undeclared_variables(true).into_iter().collect();
    let mut problems = Vec::new();
    for name in &names {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        if globals.contains(root) {
            continue;
        }
        match root {
            "params" => {
                if let Some(param) = parts.next() {
                    if !scope.params.contains(param) {
                        problems.push(TemplateProblem {
                            message: format!(
                                "template reads params.{param}, but the DAG declares no parameter \"{param}\"{}",
                                suggest(scope, param, scope.params.iter().map(String::as_str))
                            ),
                            hint: Some(format!("declare it with a default under `params:`, e.g. `params: {{ {param}: ... }}`")),
                        });
                    }
                }
            }
            "tasks" => {
                let Some(task) = parts.next() else { continue };
                if !scope.all_tasks.contains(task) {
                    problems.push(TemplateProblem {
                        message: format!(
                            "template reads the outputs of unknown task \"{task}\"{}",
                            suggest(scope, task, scope.all_tasks.iter().map(String::as_str))
                        ),
                        hint: Some(format!(
                            "tasks in this DAG: {}",
                            crate::diagnostic::list_names(scope.all_tasks.iter().map(String::as_str))
                        )),
                    });
                } else if !(scope.upstream)(task) {
                    problems.push(TemplateProblem {
                        message: format!("template reads tasks.{task}.outputs, but \"{task}\" is not upstream of this task"),
                        hint: Some(format!(
                            "add \"{task}\" to depends_on (directly or through another task), so its outputs exist when this task runs"
                        )),
                    });
                } else if let Some(field) = parts.next().filter(|f| *f != "outputs") {
                    problems.push(TemplateProblem {
                        message: format!("template reads tasks.{task}.{field}; only tasks.{task}.outputs.<key> is available"),
                        hint: None,
                    });
                }
            }
            known if CONTEXT_VARIABLES.iter().any(|(v, _)| *v == known) => {}
            unknown => {
                let names = CONTEXT_VARIABLES.iter().map(|(v, _)| *v);
                problems.push(TemplateProblem {
                    message: format!(
                        "template reads unknown variable \"{unknown}\"{}",
                        crate::diagnostic::suggestion(unknown, names.clone())
                    ),
                    hint: Some(format!("available: {}", names.collect::<Vec<_>>().join(", "))),
                });
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let params = BTreeSet::from(["bucket".to_string()]);
        let all = BTreeSet::from(["extract".to_string(), "load".to_string(), "report".to_string()]);
        let upstream = BTreeSet::from(["extract".to_string()]);
        let is_upstream = |task: &str| upstream.contains(task);
        let scope = Scope { params: &params, all_tasks: &all, upstream: &is_upstream, suggest: true };
        check(&environment(), text, &scope).into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn accepts_the_documented_context() {
        assert!(problems("{{ ds }} {{ params.bucket }} {{ tasks.extract.outputs.path }} {{ env.HOME }}").is_empty());
        assert!(problems("{% for x in range(3) %}{{ x }}{% endfor %}").is_empty());
        assert!(problems("{% set y = ds %}{{ y }}").is_empty());
    }

    #[test]
    fn reports_each_kind_of_mistake() {
        assert_eq!(problems("{{ dss }}"), ["template reads unknown variable \"dss\" (did you mean \"ds\"?)"]);
        assert_eq!(
            problems("{{ params.bucket2 }}"),
            ["template reads params.bucket2, but the DAG declares no parameter \"bucket2\" (did you mean \"bucket\"?)"]
        );
        assert_eq!(
            problems("{{ tasks.report.outputs.x }}"),
            ["template reads tasks.report.outputs, but \"report\" is not upstream of this task"]
        );
        assert_eq!(
            problems("{{ tasks.extrct.outputs.x }}"),
            ["template reads the outputs of unknown task \"extrct\" (did you mean \"extract\"?)"]
        );
        assert!(problems("{{ ds ")[0].starts_with("template does not parse: "));
    }
}
