//! `sql.load` against each server's own bulk loader, in the same run, on the same server and
//! the same generated file of 1,000,000 loan records (about 80 MB of CSV, made here, never
//! committed). Goal: at least 0.8 of the reference's throughput on each server.
//!
//! - PostgreSQL: `flowctl run` of a DAG with one `sql.load` against
//!   `psql -c "\copy loans FROM 'FILE' WITH (FORMAT csv, HEADER true)"`;
//! - MariaDB: the same against
//!   `mariadb --local-infile=1 -e "LOAD DATA LOCAL INFILE 'FILE' INTO TABLE loans ..."`.
//!
//! Both sides are timed as whole commands (process start, connection, the load, the commit), into
//! a freshly truncated table, alternating sides, `REPEATS` times each after one untimed warm-up
//! load (a fresh server's first load pays for growing its files); the medians are compared, and
//! every time is printed.
//! The servers are the test harness's (tests/util/databases.rs): real PostgreSQL and MariaDB in
//! temporary folders. Run with `cargo bench --bench sql_load` (scripts/test.sh installs MariaDB).

#[path = "../tests/util/databases.rs"]
mod databases;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FLOWCTL: &str = env!("CARGO_BIN_EXE_flowctl");
const ROWS: u64 = 1_000_000;
const REPEATS: usize = 5;
const GOAL: f64 = 0.8;

const TABLE: &str = "(loan_sequence_number varchar(12) primary key, credit_score smallint, first_payment_date integer, \
    orig_upb bigint, orig_interest_rate numeric(6,3), msa integer, property_state char(2), postal_code varchar(5), \
    loan_purpose char(1), seller_name varchar(60))";

/// The CSV file: a header, then `ROWS` loans in key order; one in five has no MSA (NULL).
fn write_file(path: &Path) -> u64 {
    let mut text = String::with_capacity(90 * ROWS as usize);
    text.push_str("loan_sequence_number,credit_score,first_payment_date,orig_upb,orig_interest_rate,msa,property_state,postal_code,loan_purpose,seller_name\n");
    let states = ["CA", "TX", "FL", "NY", "IL", "WA"];
    let sellers = ["\"WELLS FARGO BANK, N.A.\"", "QUICKEN LOANS INC.", "Other sellers", "U.S. BANK N.A."];
    let mut x: u64 = 42;
    for i in 0..ROWS {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = x >> 20;
        let msa = if r % 5 == 0 { String::new() } else { (10000 + r % 89999).to_string() };
        let _ = writeln!(
            text,
            "F{:02}Q{}{:07},{},{}{:02},{},{}.{:03},{msa},{},{}00,{},{}",
            15 + (i % 9),
            1 + (i % 4),
            i,
            600 + r % 250,
            2015 + (r >> 8) % 9,
            1 + (r >> 12) % 12,
            (50 + (r >> 16) % 700) * 1000,
            2 + (r >> 24) % 6,
            ((r >> 28) % 8) * 125,
            states[((r >> 32) % 6) as usize],
            100 + (r >> 36) % 899,
            ["P", "C", "N"][((r >> 40) % 3) as usize],
            sellers[((r >> 44) % 4) as usize],
        );
    }
    std::fs::write(path, &text).expect("write the CSV");
    text.len() as u64
}

fn timed(mut command: Command, what: &str) -> Duration {
    let start = Instant::now();
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let elapsed = start.elapsed();
    assert!(output.status.success(), "{what} failed:\n{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn seconds(v: &[Duration]) -> String {
    v.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect::<Vec<_>>().join(" ")
}

fn flowctl_load(dir: &Path, home: &Path, connection: (&str, &str), file: &Path, what: &str) -> Duration {
    let dag = dir.join(format!("load_{}.yaml", connection.0));
    std::fs::write(
        &dag,
        format!(
            "dag: bench_{0}\ntasks:\n  - id: load\n    operator: sql.load\n    with:\n      connection: {0}\n      source: {1}\n      table: loans\n",
            connection.0,
            file.display()
        ),
    )
    .expect("write the DAG");
    let mut command = Command::new(FLOWCTL);
    command.arg("--home").arg(home).arg("run").arg(&dag).env(format!("FLOWCTL_CONN_{}", connection.0.to_uppercase()), connection.1);
    timed(command, what)
}

fn report(name: &str, reference: &str, ours_all: Vec<Duration>, theirs_all: Vec<Duration>) -> bool {
    println!("{name}: sql.load runs (s): {}; {reference} runs (s): {}", seconds(&ours_all), seconds(&theirs_all));
    let (ours, theirs) = (median(ours_all), median(theirs_all));
    let rate = |d: Duration| ROWS as f64 / d.as_secs_f64();
    let ratio = rate(ours) / rate(theirs);
    println!(
        "{name:<10} sql.load {:>7.2} s {:>9.0} rows/s | {reference:<28} {:>7.2} s {:>9.0} rows/s | ratio {ratio:.2} (goal >= {GOAL}) {}",
        ours.as_secs_f64(),
        rate(ours),
        theirs.as_secs_f64(),
        rate(theirs),
        if ratio >= GOAL { "ok" } else { "BELOW GOAL" }
    );
    ratio >= GOAL
}

fn main() {
    let dir = tempfile::Builder::new().prefix("flowctl-sql-bench-").tempdir().expect("temp dir");
    let file = dir.path().join("loans.csv");
    let bytes = write_file(&file);
    println!("file: {ROWS} records, {:.1} MB of CSV", bytes as f64 / 1e6);
    let home = dir.path().join("home");

    // PostgreSQL.
    let pg = databases::postgres();
    pg.create_database("bench");
    pg.psql("bench", &format!("CREATE TABLE loans {TABLE}"));
    let (mut ours, mut theirs, mut warm_up, mut warm_up_reference) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Round 0 is the warm-up.
    for i in 0..(REPEATS + 1) * 2 {
        pg.psql("bench", "TRUNCATE loans; CHECKPOINT");
        let (ours, theirs) = if i < 2 { (&mut warm_up, &mut warm_up_reference) } else { (&mut ours, &mut theirs) };
        if i % 2 == 0 {
            ours.push(flowctl_load(dir.path(), &home, ("pg", &pg.url("bench")), &file, "flowctl sql.load into PostgreSQL"));
        } else {
            let mut command = Command::new(pg.psql_program());
            command
                .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "flowctl", "-d", "bench", "-c"])
                .arg(format!("\\copy loans FROM '{}' WITH (FORMAT csv, HEADER true)", file.display()))
                .env("PGPASSWORD", databases::PASSWORD);
            theirs.push(timed(command, "psql \\copy"));
        }
        assert_eq!(pg.psql("bench", "SELECT count(*) FROM loans").trim(), ROWS.to_string());
    }
    let pg_ok = report("PostgreSQL", "psql \\copy", ours, theirs);

    // MariaDB.
    let my = databases::mariadb();
    my.create_database("bench");
    my.sql("bench", &format!("CREATE TABLE loans {TABLE} ENGINE=InnoDB"));
    let (mut ours, mut theirs, mut warm_up, mut warm_up_reference) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..(REPEATS + 1) * 2 {
        my.sql("bench", "TRUNCATE loans");
        let (ours, theirs) = if i < 2 { (&mut warm_up, &mut warm_up_reference) } else { (&mut ours, &mut theirs) };
        if i % 2 == 0 {
            ours.push(flowctl_load(dir.path(), &home, ("my", &my.url("bench")), &file, "flowctl sql.load into MariaDB"));
        } else {
            let mut command = Command::new("mariadb");
            command
                .args(["--no-defaults", "--local-infile=1", "-h", "127.0.0.1", "-P", &my.port.to_string(), "-u", "flowctl", "bench", "-e"])
                .arg(format!(
                    "LOAD DATA LOCAL INFILE '{}' INTO TABLE loans FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n' IGNORE 1 LINES \
                     (loan_sequence_number, credit_score, first_payment_date, orig_upb, orig_interest_rate, @msa, property_state, postal_code, loan_purpose, seller_name) \
                     SET msa = NULLIF(@msa, '')",
                    file.display()
                ))
                .env("MYSQL_PWD", databases::PASSWORD);
            theirs.push(timed(command, "mariadb LOAD DATA LOCAL INFILE"));
        }
        assert_eq!(my.sql("bench", "SELECT count(*) FROM loans").trim(), ROWS.to_string());
    }
    let my_ok = report("MariaDB", "mariadb LOAD DATA LOCAL", ours, theirs);
    if !(pg_ok && my_ok) {
        println!("at least one ratio is below the goal");
    }
}
