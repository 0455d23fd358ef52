//! End-to-end tests of `sql.execute`, `sql.load` and `sql.export`: the real `flowctl` binary runs
//! DAGs against a real PostgreSQL and a real MariaDB (tests/util/databases.rs starts them once
//! for this binary), with connections from the home's config.yaml (password_env) or from
//! `FLOWCTL_CONN_*` variables. What landed in the tables is read back with psql and the mariadb
//! client, not through the code under test.

mod util;

use std::fmt::Write as _;

use util::databases::{mariadb, postgres, PASSWORD};
use util::{files_under, setup_sql, Cmd, Run, TempHome};

/// Writes a DAG file into the scratch folder and runs it; returns the run and its id.
fn run_dag(home: &TempHome, cmd: &Cmd, name: &str, yaml: &str) -> (Run, String) {
    let file = home.write(&format!("{name}.yaml"), yaml);
    let run = cmd.run(["run", file.to_str().expect("UTF-8 path")]);
    let id = run.run_id();
    (run, id)
}

/// `flowctl logs DAG RUN TASK`.
fn logs(cmd: &Cmd, dag: &str, run: &str, task: &str) -> String {
    let run = cmd.run(["logs", dag, run, task]);
    run.expect_code(0);
    run.stdout
}

// ------------------------------------------------------------------------------------ loan data

/// The columns of our loan files: a subset of Freddie Mac's single-family origination layout, in
/// its order, with the types we load them as.
const LOAN_COLUMNS: &[(&str, &str)] = &[
    ("credit_score", "smallint"),
    ("first_payment_date", "integer"),
    ("first_time_homebuyer_flag", "char(1)"),
    ("maturity_date", "integer"),
    ("msa", "integer"),
    ("mi_pct", "smallint"),
    ("number_of_units", "smallint"),
    ("occupancy_status", "char(1)"),
    ("orig_dti", "smallint"),
    ("orig_upb", "bigint"),
    ("orig_ltv", "smallint"),
    ("orig_interest_rate", "numeric(6,3)"),
    ("property_state", "char(2)"),
    ("postal_code", "varchar(5)"),
    ("loan_sequence_number", "varchar(12) not null"),
    ("loan_purpose", "char(1)"),
    ("orig_loan_term", "smallint"),
    ("seller_name", "varchar(60)"),
];

/// What a generated loan file holds, to compare with the table.
struct Loans {
    text: String,
    rows: u64,
    upb_sum: u64,
    msa_nulls: u64,
    /// The loan sequence numbers, in file order.
    ids: Vec<String>,
}

/// A deterministic pseudo-random sequence (no dependency, same file every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// `rows` loans, pipe-delimited with a header line, as Freddie Mac's files (with a header).
fn loan_file(rows: u64, seed: u64, prefix: &str) -> Loans {
    let mut rng = Lcg(seed);
    let mut text = LOAN_COLUMNS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join("|");
    text.push('\n');
    let (mut upb_sum, mut msa_nulls, mut ids) = (0, 0, Vec::new());
    let states = ["CA", "TX", "FL", "NY", "IL", "WA"];
    let sellers = ["WELLS FARGO BANK, N.A.", "QUICKEN LOANS INC.", "Other sellers", "U.S. BANK N.A."];
    for i in 0..rows {
        let year = 2015 + rng.next(8);
        let month = 1 + rng.next(12);
        let upb = (50 + rng.next(700)) * 1000;
        let msa = if rng.next(5) == 0 {
            msa_nulls += 1;
            String::new()
        } else {
            (10000 + rng.next(89999)).to_string()
        };
        let rate = format!("{}.{:03}", 2 + rng.next(6), rng.next(8) * 125);
        // Freddie Mac's loan sequence number: F, the year's two digits, Q and the quarter, 7 digits.
        let id = format!("{prefix}{:02}Q{}{:07}", year % 100, 1 + (month - 1) / 3, i + 1);
        upb_sum += upb;
        let _ = writeln!(
            text,
            "{}|{year}{month:02}|{}|{}{month:02}|{msa}|{}|{}|{}|{}|{upb}|{}|{rate}|{}|{}00|{id}|{}|360|{}",
            600 + rng.next(250),
            ["Y", "N"][rng.next(2) as usize],
            year + 30,
            [0, 12, 25, 30][rng.next(4) as usize],
            1 + rng.next(4),
            ["P", "I", "S"][rng.next(3) as usize],
            10 + rng.next(40),
            50 + rng.next(47),
            states[rng.next(states.len() as u64) as usize],
            100 + rng.next(899),
            ["P", "C", "N"][rng.next(3) as usize],
            sellers[rng.next(sellers.len() as u64) as usize],
        );
        ids.push(id);
    }
    Loans { text, rows, upb_sum, msa_nulls, ids }
}

/// `create_table:` for the loan columns, as YAML lines indented for a task's `with:`.
fn loan_create_table(primary_key: bool) -> String {
    let mut yaml = String::from("      create_table:\n        columns:\n");
    for (name, ty) in LOAN_COLUMNS {
        let _ = writeln!(yaml, "          {name}: \"{ty}\"");
    }
    if primary_key {
        yaml.push_str("        primary_key: [loan_sequence_number]\n");
    }
    yaml
}

fn load_task(id: &str, connection: &str, source: &str, table: &str, extra: &str) -> String {
    format!("  - id: {id}\n    operator: sql.load\n    with:\n      connection: {connection}\n      source: {source}\n      table: {table}\n      delimiter: \"|\"\n{extra}")
}

// ------------------------------------------------------------------------------------ sql.load

#[test]
fn a_loan_file_loads_with_its_row_count_and_types_into_postgresql_and_mariadb() {
    let (home, cmd) = setup_sql("t_loans");
    let loans = loan_file(2500, 7, "F");
    home.write("loans_2024Q1.txt", &loans.text);
    let create = loan_create_table(true);
    let yaml = format!(
        "dag: sql_loans\ntasks:\n{}{}{}",
        load_task("to_postgres", "pg", "loans_2024Q1.txt", "loans", &create),
        load_task("to_mariadb", "my", "loans_*.txt", "loans", &create),
        load_task("to_mariadb_by_insert", "my", "loans_2024Q1.txt", "loans_by_insert", &format!("{create}      mysql_method: insert\n")),
    );
    let (run, id) = run_dag(&home, &cmd, "loans", &yaml);
    run.expect_code(0);

    let pg_out = cmd.task("sql_loans", &id, "to_postgres")["outputs"].clone();
    assert_eq!(pg_out["rows"], 2500, "{pg_out:#}");
    assert_eq!(pg_out["method"], "copy");
    assert_eq!(pg_out["files"], serde_json::json!(["loans_2024Q1.txt"]));
    let my_out = cmd.task("sql_loans", &id, "to_mariadb")["outputs"].clone();
    assert_eq!(my_out["rows"], 2500, "{my_out:#}");
    assert_eq!(my_out["method"], "load_data_local_infile");
    let insert_out = cmd.task("sql_loans", &id, "to_mariadb_by_insert")["outputs"].clone();
    assert_eq!((insert_out["rows"].clone(), insert_out["method"].clone()), (2500.into(), "insert".into()), "{insert_out:#}");

    // Counts, sums, NULLs and one whole row, read back by each server's own client.
    let summary = "SELECT count(*), sum(orig_upb), count(*) - count(msa) FROM loans";
    let expected = format!("{}|{}|{}", loans.rows, loans.upb_sum, loans.msa_nulls);
    assert_eq!(postgres().psql("t_loans", summary).trim(), expected);
    assert_eq!(mariadb().sql("t_loans", summary).trim().replace('\t', "|"), expected);
    assert_eq!(mariadb().sql("t_loans", &summary.replace("loans", "loans_by_insert")).trim().replace('\t', "|"), expected);
    let first = loans.text.lines().nth(1).expect("a first loan");
    let columns = LOAN_COLUMNS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
    let row_pg = postgres().psql("t_loans", &format!("SELECT {columns} FROM loans WHERE loan_sequence_number = '{}'", loans.ids[0]));
    assert_eq!(row_pg.trim(), first, "the first loan, as PostgreSQL returns it");
    let row_my = mariadb().sql("t_loans", &format!("SELECT {columns} FROM loans WHERE loan_sequence_number = '{}'", loans.ids[0]));
    assert_eq!(row_my.trim().replace("\tNULL\t", "\t\t").replace('\t', "|"), first, "the first loan, as MariaDB returns it");

    // The declared types, as each catalog records them.
    let types = postgres().psql("t_loans", "SELECT data_type FROM information_schema.columns WHERE table_name = 'loans' AND column_name IN ('credit_score', 'orig_upb', 'orig_interest_rate', 'seller_name') ORDER BY column_name");
    assert_eq!(types.lines().collect::<Vec<_>>(), ["smallint", "numeric", "bigint", "character varying"]);
    let types = mariadb().sql("t_loans", "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 't_loans' AND TABLE_NAME = 'loans' AND COLUMN_NAME IN ('credit_score', 'orig_upb', 'orig_interest_rate', 'seller_name') ORDER BY COLUMN_NAME");
    assert_eq!(types.lines().collect::<Vec<_>>(), ["smallint", "decimal", "bigint", "varchar"]);
    let rate = postgres().psql("t_loans", "SELECT count(*) FROM loans WHERE orig_interest_rate * 1000 <> round(orig_interest_rate * 1000)");
    assert_eq!(rate.trim(), "0", "rates keep their three decimals");

    // The log says what happened, with the masked URL and never the password.
    let log = logs(&cmd, "sql_loans", &id, "to_postgres");
    assert!(log.contains(&format!("loading 1 file into loans (append) on postgres://flowctl:***@127.0.0.1:{}/t_loans", postgres().port)), "{log}");
    assert!(log.contains("loaded 2500 rows into loans with copy in "), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
}

#[test]
fn upsert_updates_rows_with_existing_keys_and_inserts_new_ones() {
    let (home, cmd) = setup_sql("t_upsert");
    home.write("day1.csv", "loan_sequence_number,credit_score,seller_name\nF1,700,alpha\nF2,710,beta\nF3,720,gamma\n");
    home.write("day2.csv", "loan_sequence_number,credit_score,seller_name\nF2,999,\"beta, updated\"\nF4,640,delta\n");
    let create = "      create_table:\n        columns:\n          loan_sequence_number: varchar(12)\n          credit_score: integer\n          seller_name: varchar(40)\n";
    let task = |id: &str, connection: &str, source: &str, depends: &str| {
        format!("  - id: {id}\n    operator: sql.load\n{depends}    with:\n      connection: {connection}\n      source: {source}\n      table: loans\n      mode: upsert\n      key: [loan_sequence_number]\n{create}")
    };
    let yaml = format!(
        "dag: sql_upsert\ntasks:\n{}{}{}{}",
        task("pg_day1", "pg", "day1.csv", ""),
        task("pg_day2", "pg", "day2.csv", "    depends_on: [pg_day1]\n"),
        task("my_day1", "my", "day1.csv", ""),
        task("my_day2", "my", "day2.csv", "    depends_on: [my_day1]\n"),
    );
    let (run, id) = run_dag(&home, &cmd, "upsert", &yaml);
    run.expect_code(0);
    let expected = ["F1|700|alpha", "F2|999|beta, updated", "F3|720|gamma", "F4|640|delta"];
    let query = "SELECT loan_sequence_number, credit_score, seller_name FROM loans ORDER BY 1";
    assert_eq!(postgres().psql("t_upsert", query).lines().collect::<Vec<_>>(), expected);
    assert_eq!(mariadb().sql("t_upsert", query).replace('\t', "|").lines().collect::<Vec<_>>(), expected);
    assert_eq!(cmd.task("sql_upsert", &id, "pg_day2")["outputs"]["rows"], 2);
    assert_eq!(cmd.task("sql_upsert", &id, "my_day2")["outputs"]["rows"], 2);
}

#[test]
fn mysql_upsert_without_a_unique_key_fails_before_loading_anything() {
    let (home, cmd) = setup_sql("t_upsert_nokey");
    mariadb().sql("t_upsert_nokey", "CREATE TABLE loans (id varchar(12), score int); INSERT INTO loans VALUES ('A', 1)");
    home.write("in.csv", "id,score\nA,2\n");
    let yaml = "dag: sql_nokey\ntasks:\n  - id: up\n    operator: sql.load\n    with:\n      connection: my\n      source: in.csv\n      table: loans\n      mode: upsert\n      key: [id]\n";
    let (run, id) = run_dag(&home, &cmd, "nokey", yaml);
    run.expect_code(1);
    assert_eq!(
        cmd.task("sql_nokey", &id, "up")["error"],
        "upsert needs a primary key or unique index on (id) in table loans, and it has none; add one (ALTER TABLE ... ADD UNIQUE ...), or create the table with create_table"
    );
    assert_eq!(mariadb().sql("t_upsert_nokey", "SELECT id, score FROM loans").trim(), "A\t1");
}

/// A loan file whose record on `bad_line` has `abc` as its credit score.
fn with_bad_credit_score(loans: &Loans, bad_line: usize) -> String {
    loans
        .text
        .lines()
        .enumerate()
        .map(|(i, line)| if i + 1 == bad_line { format!("abc{}", &line[line.find('|').expect("a delimiter")..]) } else { line.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn a_failed_replace_or_truncate_leaves_the_old_rows_in_place() {
    let (home, cmd) = setup_sql("t_replace");
    let old = loan_file(40, 1, "O");
    home.write("old.txt", &old.text);
    let new = loan_file(3000, 2, "N");
    home.write("new_bad.txt", &with_bad_credit_score(&new, 1500));
    let create = loan_create_table(true);
    let first = format!(
        "dag: sql_replace_first\ntasks:\n{}{}",
        load_task("pg", "pg", "old.txt", "loans", &format!("{create}      mode: replace\n")),
        load_task("my", "my", "old.txt", "loans", &format!("{create}      mode: replace\n")),
    );
    let (run, _) = run_dag(&home, &cmd, "first", &first);
    run.expect_code(0);
    for mode in ["replace", "truncate"] {
        let yaml = format!(
            "dag: sql_{mode}\ntasks:\n{}{}",
            load_task("pg", "pg", "new_bad.txt", "loans", &format!("      mode: {mode}\n")),
            load_task("my", "my", "new_bad.txt", "loans", &format!("      mode: {mode}\n")),
        );
        let (run, id) = run_dag(&home, &cmd, mode, &yaml);
        run.expect_code(1);
        for t in ["pg", "my"] {
            let ti = cmd.task(&format!("sql_{mode}"), &id, t);
            assert_eq!(ti["state"], "failed", "{ti:#}");
            assert!(ti["error"].as_str().unwrap_or_default().starts_with("new_bad.txt line 1500, column credit_score: "), "{mode} {t}: {ti:#}");
        }
        let count = "SELECT count(*), min(loan_sequence_number) FROM loans";
        let expected = format!("40|{}", old.ids.iter().min().expect("ids"));
        assert_eq!(postgres().psql("t_replace", count).trim(), expected, "PostgreSQL after a failed {mode}");
        assert_eq!(mariadb().sql("t_replace", count).trim().replace('\t', "|"), expected, "MariaDB after a failed {mode}");
    }
    // No staging table is left behind.
    assert_eq!(postgres().psql("t_replace", "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'").trim(), "loans");
    assert_eq!(mariadb().sql("t_replace", "SHOW TABLES").trim(), "loans");

    // A good file replaces the rows (and the table) atomically.
    home.write("new_good.txt", &new.text);
    let yaml = format!(
        "dag: sql_replace_good\ntasks:\n{}{}",
        load_task("pg", "pg", "new_good.txt", "loans", "      mode: replace\n"),
        load_task("my", "my", "new_good.txt", "loans", "      mode: replace\n"),
    );
    let (run, _) = run_dag(&home, &cmd, "good", &yaml);
    run.expect_code(0);
    let count = "SELECT count(*), sum(orig_upb) FROM loans";
    let expected = format!("3000|{}", new.upb_sum);
    assert_eq!(postgres().psql("t_replace", count).trim(), expected);
    assert_eq!(mariadb().sql("t_replace", count).trim().replace('\t', "|"), expected);
    // The replaced table kept its primary key.
    let pk = postgres().psql("t_replace", "SELECT count(*) FROM information_schema.table_constraints WHERE table_name = 'loans' AND constraint_type = 'PRIMARY KEY'");
    assert_eq!(pk.trim(), "1");
    assert_eq!(mariadb().sql("t_replace", "SHOW KEYS FROM loans WHERE Key_name = 'PRIMARY'").lines().count(), 1);
}

#[test]
fn a_malformed_row_gives_its_file_line_and_column() {
    let (home, cmd) = setup_sql("t_malformed");
    let loans = loan_file(10, 3, "M");
    home.write("bad_score.txt", &with_bad_credit_score(&loans, 6));
    let mut short = loans.text.lines().map(str::to_string).collect::<Vec<_>>();
    short[3] = short[3].rsplit_once('|').expect("a delimiter").0.to_string();
    home.write("short_row.txt", &(short.join("\n") + "\n"));
    let create = loan_create_table(false);
    let yaml = format!(
        "dag: sql_malformed\ntasks:\n{}{}{}{}{}",
        load_task("pg_bad", "pg", "bad_score.txt", "loans", &create),
        load_task("my_bad", "my", "bad_score.txt", "loans", &create),
        load_task("my_bad_insert", "my", "bad_score.txt", "loans", &format!("{create}      mysql_method: insert\n")),
        load_task("pg_short", "pg", "short_row.txt", "loans", &create),
        load_task("my_short", "my", "short_row.txt", "loans", &create),
    );
    let (run, id) = run_dag(&home, &cmd, "malformed", &yaml);
    run.expect_code(1);
    let error = |t: &str| cmd.task("sql_malformed", &id, t)["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(error("pg_bad"), "bad_score.txt line 6, column credit_score: invalid input syntax for type smallint: \"abc\" [SQLSTATE 22P02]");
    assert_eq!(error("my_bad"), "bad_score.txt line 6, column credit_score: Incorrect integer value: 'abc' for column `t_malformed`.`loans`.`credit_score` [MySQL 1366]");
    assert_eq!(error("my_bad_insert"), "bad_score.txt line 6, column credit_score: Incorrect integer value: 'abc' for column `t_malformed`.`loans`.`credit_score` [MySQL 1366]");
    let short_error = "short_row.txt line 4, column 18 (seller_name): the record has 17 fields and 18 were expected (the field is missing); check the delimiter '|' and the quoting of this line";
    assert_eq!(error("pg_short"), short_error);
    assert_eq!(error("my_short"), short_error);
    // Nothing of the failed loads stayed: on PostgreSQL not even the table, whose CREATE was part
    // of the load's transaction; MySQL commits DDL at once, so there the table stays, empty.
    assert_eq!(postgres().psql("t_malformed", "SELECT to_regclass('loans') IS NULL").trim(), "t");
    assert_eq!(mariadb().sql("t_malformed", "SELECT count(*) FROM loans").trim(), "0");
}

#[test]
fn headerless_files_nulls_quotes_and_a_column_mapping() {
    let (home, cmd) = setup_sql("t_mapping");
    postgres().psql("t_mapping", "CREATE TABLE people (id int, name text, note text)");
    mariadb().sql("t_mapping", "CREATE TABLE people (id int, name text, note text)");
    // Headerless TSV, \N for NULL, a column to skip, a quoted field with a tab and a quote.
    home.write("people.tsv", "1\tskip\tann\t\\N\n2\tskip\t\"b\tob \"\"the\"\" builder\"\t\n");
    let task = |id: &str, connection: &str| {
        format!("  - id: {id}\n    operator: sql.load\n    with:\n      connection: {connection}\n      source: people.tsv\n      table: people\n      format: tsv\n      header: false\n      null_value: \"\\\\N\"\n      columns: [id, null, name, note]\n")
    };
    let yaml = format!("dag: sql_mapping\ntasks:\n{}{}", task("pg", "pg"), task("my", "my"));
    let (run, _) = run_dag(&home, &cmd, "mapping", &yaml);
    run.expect_code(0);
    let query = "SELECT id, name, coalesce(note, 'NULL') FROM people ORDER BY id";
    let expected = ["1|ann|NULL", "2|b\tob \"the\" builder|"];
    assert_eq!(postgres().psql("t_mapping", query).lines().collect::<Vec<_>>(), expected);
    // The mariadb client escapes tabs in batch output.
    assert_eq!(mariadb().sql("t_mapping", query).replace("\\t", "\u{1}").replace('\t', "|").replace('\u{1}', "\t").lines().collect::<Vec<_>>(), expected);
}

// ------------------------------------------------------------------------------------ sql.execute

#[test]
fn execute_runs_scripts_and_its_fetched_rows_feed_a_downstream_template() {
    let (home, cmd) = setup_sql("t_execute");
    home.write(
        "setup_pg.sql",
        "CREATE TABLE t (id int primary key, v text);\n\
         -- a comment; with a semicolon\n\
         INSERT INTO t VALUES (1, 'a;b'), (2, 'it''s');\n\
         CREATE FUNCTION bump() RETURNS int AS $$ BEGIN UPDATE t SET id = id + 10; RETURN 1; END; $$ LANGUAGE plpgsql;\n\
         SELECT bump();\n",
    );
    let yaml = "dag: sql_execute\ntasks:\n\
        \x20 - id: pg_setup\n    operator: sql.execute\n    with:\n      connection: pg\n      sql_file: setup_pg.sql\n\
        \x20 - id: pg_query\n    operator: sql.execute\n    depends_on: [pg_setup]\n    with:\n      connection: pg\n      sql: SELECT count(*) AS n, max(id) AS top, string_agg(v, ',' ORDER BY id) AS vs, true AS ok, NULL AS nothing FROM t\n      fetch: true\n\
        \x20 - id: my_setup\n    operator: sql.execute\n    with:\n      connection: my\n      transaction: true\n      sql: |\n        CREATE TABLE t (id int primary key, v text);\n        INSERT INTO t VALUES (1, 'x\\';y'), (2, \"q\"), (3, 'z');  # a comment;\n        UPDATE t SET v = concat(v, '!') WHERE id > 1\n\
        \x20 - id: my_query\n    operator: sql.execute\n    depends_on: [my_setup]\n    with:\n      connection: my\n      sql: SELECT id, v FROM t ORDER BY id\n      fetch: true\n      fetch_limit: 2\n\
        \x20 - id: report\n    operator: shell\n    depends_on: [pg_query, my_query]\n    with:\n      command: |\n        echo \"pg={{ tasks.pg_query.outputs.rows[0].n }} top={{ tasks.pg_query.outputs.rows[0].top }} vs={{ tasks.pg_query.outputs.rows[0].vs }}\"\n        echo \"my={{ tasks.my_query.outputs.rows[1].v }} truncated={{ tasks.my_query.outputs.truncated }}\"\n        echo \"n={{ tasks.pg_query.outputs.rows[0].n }}\" >> \"$FLOWCTL_OUTPUT\"\n";
    let (run, id) = run_dag(&home, &cmd, "execute", yaml);
    run.expect_code(0);
    let setup = cmd.task("sql_execute", &id, "pg_setup")["outputs"].clone();
    // PostgreSQL counts the row `SELECT bump()` returns, not the rows the function updated.
    assert_eq!(setup, serde_json::json!({"rows_affected": 3, "statements": 4, "rows_affected_by_statement": [0, 2, 0, 1]}), "{setup:#}");
    let query = cmd.task("sql_execute", &id, "pg_query")["outputs"].clone();
    assert_eq!(query["rows"], serde_json::json!([{"n": 2, "top": 12, "vs": "a;b,it's", "ok": true, "nothing": null}]), "{query:#}");
    assert_eq!((query["row_count"].clone(), query["truncated"].clone()), (1.into(), false.into()));
    let my = cmd.task("sql_execute", &id, "my_setup")["outputs"].clone();
    assert_eq!(my["rows_affected_by_statement"], serde_json::json!([0, 3, 2]), "{my:#}");
    let my = cmd.task("sql_execute", &id, "my_query")["outputs"].clone();
    assert_eq!(my["rows"], serde_json::json!([{"id": 1, "v": "x';y"}, {"id": 2, "v": "q!"}]), "{my:#}");
    assert_eq!(my["truncated"], true);
    let report = logs(&cmd, "sql_execute", &id, "report");
    assert!(report.contains("pg=2 top=12 vs=a;b,it's"), "{report}");
    assert!(report.contains("my=q! truncated=True"), "{report}");
    assert_eq!(cmd.task("sql_execute", &id, "report")["outputs"]["n"], "2");
    let log = logs(&cmd, "sql_execute", &id, "pg_setup");
    assert!(log.contains("running 4 statements on postgres://flowctl:***@127.0.0.1:"), "{log}");
    assert!(log.contains("statement 2/4 (line 3): 2 rows affected in "), "{log}");
}

#[test]
fn a_failing_statement_in_a_transaction_rolls_back_the_ones_before_it() {
    let (home, cmd) = setup_sql("t_tx");
    postgres().psql("t_tx", "CREATE TABLE t (id int primary key)");
    mariadb().sql("t_tx", "CREATE TABLE t (id int primary key) ENGINE=InnoDB");
    let task = |id: &str, connection: &str| {
        format!("  - id: {id}\n    operator: sql.execute\n    with:\n      connection: {connection}\n      transaction: true\n      sql: |\n        INSERT INTO t VALUES (1);\n        INSERT INTO t VALUES (2);\n        INSERT INTO t VALUES (1);\n")
    };
    let yaml = format!("dag: sql_tx\ntasks:\n{}{}", task("pg", "pg"), task("my", "my"));
    let (run, id) = run_dag(&home, &cmd, "tx", &yaml);
    run.expect_code(1);
    assert_eq!(
        cmd.task("sql_tx", &id, "pg")["error"],
        "statement 3 of 3 (line 3) failed: duplicate key value violates unique constraint \"t_pkey\" (Key (id)=(1) already exists.) [SQLSTATE 23505]: INSERT INTO t VALUES (1)"
    );
    assert_eq!(
        cmd.task("sql_tx", &id, "my")["error"],
        "statement 3 of 3 (line 3) failed: Duplicate entry '1' for key 'PRIMARY' [MySQL error 1062]: INSERT INTO t VALUES (1)"
    );
    assert_eq!(postgres().psql("t_tx", "SELECT count(*) FROM t").trim(), "0");
    assert_eq!(mariadb().sql("t_tx", "SELECT count(*) FROM t").trim(), "0");
}

// ------------------------------------------------------------------------------------ sql.export

#[test]
fn export_round_trip_from_each_server_to_the_other() {
    let (home, cmd) = setup_sql("t_export");
    let create = "CREATE TABLE src (id int, name varchar(40), note varchar(40), amount decimal(10,2))";
    let insert = "INSERT INTO src VALUES (1, 'plain', NULL, 1.50), (2, 'with, comma', '', 2.00), (3, 'say \"hi\"', 'two\nlines', NULL), (4, 'back\\\\slash', 'tab\there', 0.01)";
    postgres().psql("t_export", create);
    postgres().psql("t_export", &insert.replace("\\\\", "\\"));
    mariadb().sql("t_export", create);
    mariadb().sql("t_export", insert);
    postgres().psql("t_export", "CREATE TABLE back (id int, name varchar(40), note varchar(40), amount decimal(10,2))");
    mariadb().sql("t_export", "CREATE TABLE back (id int, name varchar(40), note varchar(40), amount decimal(10,2))");
    let yaml = "dag: sql_export\ntasks:\n\
        \x20 - id: from_pg\n    operator: sql.export\n    with:\n      connection: pg\n      query: SELECT id, name, note, amount FROM src ORDER BY id\n      destination: out/pg.csv\n\
        \x20 - id: into_my\n    operator: sql.load\n    depends_on: [from_pg]\n    with:\n      connection: my\n      source: \"{{ tasks.from_pg.outputs.path }}\"\n      table: back\n\
        \x20 - id: from_my\n    operator: sql.export\n    with:\n      connection: my\n      query: SELECT id, name, note, amount FROM src ORDER BY id\n      destination: out/my.tsv\n      format: tsv\n\
        \x20 - id: into_pg\n    operator: sql.load\n    depends_on: [from_my]\n    with:\n      connection: pg\n      source: \"{{ tasks.from_my.outputs.path }}\"\n      format: tsv\n      table: back\n";
    let (run, id) = run_dag(&home, &cmd, "export", yaml);
    run.expect_code(0);
    assert_eq!(cmd.task("sql_export", &id, "from_pg")["outputs"], serde_json::json!({"rows": 4, "path": "out/pg.csv"}));
    assert_eq!(cmd.task("sql_export", &id, "from_my")["outputs"], serde_json::json!({"rows": 4, "path": "out/my.tsv"}));
    let csv = std::fs::read_to_string(home.scratch().join("out/pg.csv")).expect("the export");
    assert_eq!(csv, "id,name,note,amount\n1,plain,,1.50\n2,\"with, comma\",\"\",2.00\n3,\"say \"\"hi\"\"\",\"two\nlines\",\n4,back\\slash,tab\there,0.01\n");
    let tsv = std::fs::read_to_string(home.scratch().join("out/my.tsv")).expect("the export");
    assert_eq!(tsv, "id\tname\tnote\tamount\n1\tplain\t\t1.50\n2\twith, comma\t\"\"\t2.00\n3\t\"say \"\"hi\"\"\"\t\"two\nlines\"\t\n4\tback\\slash\t\"tab\there\"\t0.01\n");
    // What went out of one server came back into the other unchanged: NULLs, empty strings, quotes,
    // newlines, tabs, backslashes, decimals.
    let query = "SELECT id, coalesce(name, 'NULL'), coalesce(note, 'NULL'), coalesce(amount, -1), length(note) FROM back ORDER BY id";
    let pg_src = postgres().psql("t_export", &query.replace("back", "src"));
    assert_eq!(postgres().psql("t_export", query), pg_src);
    let my_src = mariadb().sql("t_export", &query.replace("back", "src"));
    assert_eq!(mariadb().sql("t_export", query), my_src);
    assert!(pg_src.contains("2|with, comma||2.00|0"), "{pg_src}");
}

#[test]
fn a_failed_export_leaves_no_file() {
    let (home, cmd) = setup_sql("t_export_fail");
    let yaml = "dag: sql_export_fail\ntasks:\n  - id: bad\n    operator: sql.export\n    with:\n      connection: pg\n      query: SELECT nope FROM missing\n      destination: out/x.csv\n";
    let (run, id) = run_dag(&home, &cmd, "fail", yaml);
    run.expect_code(1);
    assert_eq!(cmd.task("sql_export_fail", &id, "bad")["error"], "the query failed: relation \"missing\" does not exist [SQLSTATE 42P01]");
    let left: Vec<_> = std::fs::read_dir(home.scratch().join("out")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

// ------------------------------------------------------------------------------------ secrets

#[test]
fn a_canary_password_never_appears_in_logs_status_or_the_store() {
    const CANARY: &str = "canary-7Qx2-pw";
    let (home, cmd) = setup_sql("t_canary");
    postgres().psql("postgres", &format!("DROP ROLE IF EXISTS canary; CREATE ROLE canary LOGIN SUPERUSER PASSWORD '{CANARY}'"));
    mariadb().sql("", &format!("DROP USER IF EXISTS 'canary'@'%'; CREATE USER 'canary'@'%' IDENTIFIED BY '{CANARY}'; GRANT ALL ON *.* TO 'canary'@'%'"));
    home.write("c.csv", "id\n1\n");
    // The password in the URI of FLOWCTL_CONN_* variables, working and failing.
    let cmd = cmd
        .env("FLOWCTL_CONN_PGC", &format!("postgres://canary:{CANARY}@127.0.0.1:{}/t_canary", postgres().port))
        .env("FLOWCTL_CONN_MYC", &format!("mysql://canary:{CANARY}@127.0.0.1:{}/t_canary", mariadb().port))
        .env("FLOWCTL_CONN_PGBAD", &format!("postgres://nobody_here:{CANARY}@127.0.0.1:{}/t_canary", postgres().port))
        .env("FLOWCTL_CONN_MYBAD", &format!("mysql://nobody_here:{CANARY}@127.0.0.1:{}/t_canary", mariadb().port));
    let mut yaml = String::from("dag: sql_canary\ntasks:\n");
    for c in ["pgc", "myc"] {
        let _ = write!(
            yaml,
            "  - id: {c}_exec\n    operator: sql.execute\n    with:\n      connection: {c}\n      sql: CREATE TABLE t (id int); SELECT 1 AS one\n      fetch: true\n\
             \x20 - id: {c}_load\n    operator: sql.load\n    depends_on: [{c}_exec]\n    with:\n      connection: {c}\n      source: c.csv\n      table: t\n\
             \x20 - id: {c}_export\n    operator: sql.export\n    depends_on: [{c}_load]\n    with:\n      connection: {c}\n      query: SELECT * FROM t\n      destination: {c}.csv\n\
             \x20 - id: {c}_bad_sql\n    operator: sql.execute\n    with:\n      connection: {c}\n      sql: SELEC 1\n"
        );
    }
    for c in ["pgbad", "mybad"] {
        let _ = write!(yaml, "  - id: {c}\n    operator: sql.execute\n    with:\n      connection: {c}\n      sql: SELECT 1\n");
    }
    let (run, id) = run_dag(&home, &cmd, "canary", &yaml);
    run.expect_code(1);
    let status = cmd.json(["status", "sql_canary", &id, "--output", "json"]);
    let state = |t: &str| status["tasks"].as_array().and_then(|ts| ts.iter().find(|x| x["task_id"] == t)).map(|x| x["state"].clone()).unwrap_or_default();
    for t in ["pgc_exec", "pgc_load", "pgc_export", "myc_exec", "myc_load", "myc_export"] {
        assert_eq!(state(t), "success", "{t}: {status:#}");
    }
    for t in ["pgc_bad_sql", "myc_bad_sql", "pgbad", "mybad"] {
        assert_eq!(state(t), "failed", "{t}: {status:#}");
    }
    let pg_login = cmd.task("sql_canary", &id, "pgbad")["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        pg_login,
        format!(
            "the postgres server of connection \"pgbad\" (postgres://nobody_here:***@127.0.0.1:{}/t_canary) refused the login: password authentication failed for user \"nobody_here\"; check the user and the password in the variable that password_env names",
            postgres().port
        )
    );
    let my_login = cmd.task("sql_canary", &id, "mybad")["error"].as_str().unwrap_or_default().to_string();
    assert!(my_login.starts_with(&format!("the mysql server of connection \"mybad\" (mysql://nobody_here:***@127.0.0.1:{}/t_canary) refused the login: Access denied for user 'nobody_here'@'127.0.0.1'", mariadb().port)), "{my_login}");

    // Everything a user can see: the run's output, status, every task's log, every file in the home.
    let mut seen = vec![run.stdout.clone(), run.stderr.clone(), status.to_string()];
    for t in status["tasks"].as_array().expect("tasks") {
        seen.push(logs(&cmd, "sql_canary", &id, t["task_id"].as_str().expect("id")));
    }
    for text in &seen {
        assert!(!text.contains(CANARY), "the password leaked:\n{text}");
    }
    for file in files_under(&home.path()).into_iter().chain(files_under(&home.scratch())) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(!bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()), "the password is in {}", file.display());
    }
}

// ------------------------------------------------------------------------------------ testers

fn test_connection(kind: &str, uri: &str) -> Result<String, String> {
    use flowctl_engine::connections::Connections;
    let connections = Connections::resolve(&Default::default(), None, [("FLOWCTL_CONN_DB".to_string(), uri.to_string())], &[]);
    let connection = connections.get("db").expect("connection db");
    let tester = flowctl_operators::registry().tester(kind).unwrap_or_else(|| panic!("no {kind} tester"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(tester.test(&connection))
}

#[test]
fn connection_testers_report_the_version_or_what_to_fix() {
    let (pg, my) = (postgres(), mariadb());
    pg.create_database("t_tester");
    let ok = test_connection("postgres", &pg.url("t_tester")).expect("postgres connects");
    assert!(ok.starts_with(&format!("connected to postgres://flowctl:***@127.0.0.1:{}/t_tester as flowctl: server version PostgreSQL ", pg.port)), "{ok}");
    let ok = test_connection("mysql", &my.url("")).expect("mariadb connects");
    assert!(ok.starts_with(&format!("connected to mysql://flowctl:***@127.0.0.1:{} as flowctl: server version ", my.port)) && ok.contains("MariaDB"), "{ok}");

    let wrong = test_connection("postgres", &pg.url("t_tester").replace(PASSWORD, "wrong")).unwrap_err();
    assert!(wrong.contains("refused the login: password authentication failed for user \"flowctl\"; check the user and the password in the variable that password_env names"), "{wrong}");
    let wrong = test_connection("mysql", &my.url("").replace(PASSWORD, "wrong")).unwrap_err();
    assert!(wrong.contains("refused the login: Access denied for user 'flowctl'@'127.0.0.1' (using password: YES); check the user"), "{wrong}");
    let unknown = test_connection("postgres", &pg.url("no_such_db")).unwrap_err();
    assert!(unknown.contains("names a database the server does not have: database \"no_such_db\" does not exist; check database in the connection"), "{unknown}");
    let unknown = test_connection("mysql", &my.url("no_such_db")).unwrap_err();
    assert!(unknown.contains("names a database the server does not have: Unknown database 'no_such_db'; check database in the connection"), "{unknown}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let down = test_connection("postgres", &format!("postgres://flowctl:x@127.0.0.1:{closed}/db")).unwrap_err();
    assert!(down.starts_with(&format!("cannot reach the postgres server of connection \"db\" at 127.0.0.1:{closed}: ")) && down.ends_with("check host and port, and that the server runs and accepts connections from here"), "{down}");
    let down = test_connection("mysql", &format!("mysql://flowctl:x@127.0.0.1:{closed}/db")).unwrap_err();
    assert!(down.starts_with(&format!("cannot reach the mysql server of connection \"db\" at 127.0.0.1:{closed}: ")), "{down}");
}

// ------------------------------------------------------------------------------------ s3://

#[cfg(feature = "aws-s3")]
#[test]
fn loads_from_an_s3_prefix_or_glob_and_exports_to_s3() {
    let moto = util::moto::moto();
    let bucket = util::moto::bucket("sql");
    moto.make_bucket(&bucket);
    // Headerless, pipe-delimited, unquoted: the loan files as the pipeline stores them.
    moto.put_text(&bucket, "raw/2024Q1/origination/part-1.txt", "F24Q10000001|750|CA\nF24Q10000002|690|TX\n");
    moto.put_text(&bucket, "raw/2024Q1/origination/part-2.txt", "F24Q10000003|\"712|NY\n");
    moto.put_text(&bucket, "raw/2024Q1/performance/part-1.txt", "not|a|loan|file\n");
    let (home, cmd) = setup_sql("t_s3");
    let lake = util::moto::TestConnection { name: "LAKE", vars: "S3_TEST", key_id: "AKIAFLOWCTLSQLTEST01", secret: "sql-s3-test-secret" };
    let cmd = cmd.aws_connection(&lake, moto.connection());
    let load = |id: &str, connection: &str, source: &str, depends: &str| {
        format!(
            "  - id: {id}\n    operator: sql.load\n{depends}    with:\n      connection: {connection}\n      source: \"{source}\"\n      aws_connection: lake\n      table: origination\n      delimiter: \"|\"\n      header: false\n      quote: null\n      mode: upsert\n      key: [loan_sequence_number]\n      create_table:\n        columns:\n          loan_sequence_number: varchar(12) not null\n          credit_score: varchar(10)\n          property_state: char(2)\n"
        )
    };
    let prefix = format!("s3://{bucket}/raw/2024Q1/origination/");
    let glob = format!("s3://{bucket}/raw/*/origination/part-*.txt");
    let export = |id: &str, connection: &str, depends: &str| {
        format!(
            "  - id: {id}\n    operator: sql.export\n    depends_on: [{depends}]\n    with:\n      connection: {connection}\n      aws_connection: lake\n      query: SELECT loan_sequence_number, credit_score, property_state FROM origination ORDER BY 1\n      destination: s3://{bucket}/exports/{connection}.csv\n"
        )
    };
    let yaml = format!(
        "dag: sql_s3\ntasks:\n{}{}{}{}{}{}",
        load("pg_prefix", "pg", &prefix, ""),
        load("pg_glob", "pg", &glob, "    depends_on: [pg_prefix]\n"),
        load("my_prefix", "my", &prefix, ""),
        load("my_glob", "my", &glob, "    depends_on: [my_prefix]\n"),
        export("pg_export", "pg", "pg_glob"),
        export("my_export", "my", "my_glob"),
    );
    let (run, id) = run_dag(&home, &cmd, "s3", &yaml);
    run.expect_code(0);
    let files = cmd.task("sql_s3", &id, "pg_prefix")["outputs"]["files"].clone();
    assert_eq!(files, serde_json::json!([format!("{prefix}part-1.txt"), format!("{prefix}part-2.txt")]));
    assert_eq!(cmd.task("sql_s3", &id, "my_glob")["outputs"]["rows"], 3);
    let expected = "loan_sequence_number,credit_score,property_state\nF24Q10000001,750,CA\nF24Q10000002,690,TX\nF24Q10000003,\"\"\"712\",NY\n";
    let local = home.write("expected.csv", expected);
    moto.assert_same(&bucket, "exports/pg.csv", &local);
    moto.assert_same(&bucket, "exports/my.csv", &local);
    assert_eq!(cmd.task("sql_s3", &id, "pg_export")["outputs"], serde_json::json!({"rows": 3, "path": format!("s3://{bucket}/exports/pg.csv")}));
    // The downloads were removed from the scratch folder.
    let work = home.path().join("work");
    let left: Vec<_> = files_under(&work).into_iter().filter(|p| p.to_string_lossy().contains(".sql-load")).collect();
    assert!(left.is_empty(), "{left:?}");

    // A prefix with nothing under it fails with the URL.
    let yaml = format!("dag: sql_s3_empty\ntasks:\n{}", load("none", "pg", &format!("s3://{bucket}/raw/2099Q1/"), ""));
    let (run, id) = run_dag(&home, &cmd, "s3_empty", &yaml);
    run.expect_code(1);
    assert_eq!(cmd.task("sql_s3_empty", &id, "none")["error"], format!("source s3://{bucket}/raw/2099Q1/ matches no object"));
}
