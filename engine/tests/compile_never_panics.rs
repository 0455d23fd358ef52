//! Compile must never panic, whatever it is fed: arbitrary bytes, and arbitrary YAML built from
//! the format's own keys (so the search reaches deep into the checks instead of stopping at the
//! parser).

use flowctl_engine::compile::{compile, SourceFile, DAG_KEYS, TASK_KEYS};
use flowctl_engine::operator::Registry;
use proptest::prelude::*;

fn compile_bytes(bytes: Vec<u8>) {
    let files = [SourceFile { path: "fuzz.yaml".into(), bytes }];
    match compile(&files, &Registry::new()) {
        Ok(compiled) => {
            for dag in compiled.dags {
                assert!(!dag.tasks.is_empty());
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(e.line >= 1 && e.column >= 1, "positions are 1-based: {e:?}");
                assert!(!e.message.is_empty());
            }
        }
    }
}

/// A scalar that is sometimes meaningful to compile (cron, durations, dates, templates, ids).
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_string()),
        Just("~".to_string()),
        Just("'@daily'".to_string()),
        Just("'0 6 1 */3 *'".to_string()),
        Just("'* * * * 8'".to_string()),
        Just("30s".to_string()),
        Just("2019-01-01".to_string()),
        Just("Europe/Paris".to_string()),
        Just("'{{ ds }}'".to_string()),
        Just("'{{ tasks.a.outputs.x }}'".to_string()),
        Just("'{% if %}'".to_string()),
        Just("&x a".to_string()),
        Just("*x".to_string()),
        Just("[a, b]".to_string()),
        Just("{<<: {}}".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        "[a-z_ -]{0,8}",
    ]
}

fn dag_yaml() -> impl Strategy<Value = String> {
    let key = prop_oneof![proptest::sample::select(DAG_KEYS.to_vec()).prop_map(str::to_string), "[a-z]{1,6}"];
    let task_key = proptest::sample::select(TASK_KEYS.to_vec());
    let task = proptest::collection::vec((task_key, scalar()), 0..6).prop_map(|fields| {
        let mut text = String::from("  - id: a\n");
        for (k, v) in fields {
            text.push_str(&format!("    {k}: {v}\n"));
        }
        text
    });
    (proptest::collection::vec((key, scalar()), 0..8), proptest::collection::vec(task, 0..4)).prop_map(|(top, tasks)| {
        let mut text = String::new();
        for (k, v) in top {
            text.push_str(&format!("{k}: {v}\n"));
        }
        text.push_str("tasks:\n");
        for t in tasks {
            text.push_str(&t);
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        compile_bytes(bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,256}") {
        compile_bytes(text.into_bytes());
    }

    #[test]
    fn arbitrary_dag_shaped_yaml_never_panics(text in dag_yaml()) {
        compile_bytes(text.into_bytes());
    }
}
