-- loans_processed.q: one quarter of Freddie Mac loan files, raw -> processed, on EMR's Hive.
--
-- Run by the `process` task of dags/loans_quarterly.yaml as a Hive step, which EMR runs as
--   hive-script --run-hive-script --args -f s3://<lake>/code/hive/loans_processed.q
--     -d PROCESSED=s3://<lake>/processed/2024Q1 -d QUARTER=2024Q1 -d RAW=s3://<lake>/raw/2024Q1
-- Variables (each `-d NAME=VALUE`, read as ${NAME}):
--   QUARTER    the origination quarter, e.g. 2024Q1 (part of the table names, so two quarters
--              never share a table)
--   RAW        the quarter's raw prefix: origination/ and performance/ below it hold the
--              pipe-delimited files the pipeline's `consolidate` task wrote (no header)
--   PROCESSED  where this script writes: loans/year=YYYY/ (the processed table, for Redshift)
--              and training/ (the model's training set, for SageMaker)
--
-- What it does: external tables over the raw files; dates converted from YYYYMM text to DATE;
-- the Freddie Mac "not available" codes (9999 credit score, 999 DTI/LTV) turned into NULL; one row
-- per loan and month, joined with the loan's origination facts, written as a table partitioned
-- by the reporting year. Re-running it for a quarter replaces that quarter's output.
--
-- Locally (moto) nothing runs this script: the pipeline's tests check the step EMR is asked to
-- run, not its result. See docs/pipelines/loans_quarterly.md.

SET hive.exec.dynamic.partition=true;
SET hive.exec.dynamic.partition.mode=nonstrict;
SET hive.exec.max.dynamic.partitions.pernode=1000;

CREATE DATABASE IF NOT EXISTS loans;
USE loans;

-- The raw files, as the provider lays them out (32 fields each, every field read as text).
DROP TABLE IF EXISTS raw_origination_${QUARTER};
CREATE EXTERNAL TABLE raw_origination_${QUARTER} (
  credit_score STRING,
  first_payment_date STRING,
  first_time_homebuyer_flag STRING,
  maturity_date STRING,
  msa STRING,
  mi_percent STRING,
  number_of_units STRING,
  occupancy_status STRING,
  original_cltv STRING,
  original_dti STRING,
  original_upb STRING,
  original_ltv STRING,
  original_interest_rate STRING,
  channel STRING,
  ppm_flag STRING,
  amortization_type STRING,
  property_state STRING,
  property_type STRING,
  postal_code STRING,
  loan_sequence_number STRING,
  loan_purpose STRING,
  original_loan_term STRING,
  number_of_borrowers STRING,
  seller_name STRING,
  servicer_name STRING,
  super_conforming_flag STRING,
  pre_harp_loan_sequence_number STRING,
  program_indicator STRING,
  harp_indicator STRING,
  property_valuation_method STRING,
  interest_only_indicator STRING,
  mi_cancellation_indicator STRING
)
ROW FORMAT DELIMITED FIELDS TERMINATED BY '|'
STORED AS TEXTFILE
LOCATION '${RAW}/origination/';

DROP TABLE IF EXISTS raw_performance_${QUARTER};
CREATE EXTERNAL TABLE raw_performance_${QUARTER} (
  loan_sequence_number STRING,
  monthly_reporting_period STRING,
  current_actual_upb STRING,
  current_loan_delinquency_status STRING,
  loan_age STRING,
  remaining_months_to_legal_maturity STRING,
  defect_settlement_date STRING,
  modification_flag STRING,
  zero_balance_code STRING,
  zero_balance_effective_date STRING,
  current_interest_rate STRING,
  current_non_interest_bearing_upb STRING,
  due_date_of_last_paid_installment STRING,
  mi_recoveries STRING,
  net_sale_proceeds STRING,
  non_mi_recoveries STRING,
  total_expenses STRING,
  legal_costs STRING,
  maintenance_and_preservation_costs STRING,
  taxes_and_insurance STRING,
  miscellaneous_expenses STRING,
  actual_loss_calculation STRING,
  cumulative_modification_cost STRING,
  step_modification_flag STRING,
  payment_deferral STRING,
  estimated_ltv STRING,
  zero_balance_removal_upb STRING,
  delinquent_accrued_interest STRING,
  delinquency_due_to_disaster STRING,
  borrower_assistance_status_code STRING,
  current_month_modification_cost STRING,
  interest_bearing_upb STRING
)
ROW FORMAT DELIMITED FIELDS TERMINATED BY '|'
STORED AS TEXTFILE
LOCATION '${RAW}/performance/';

-- The processed table: one row per loan and reporting month. Its columns, in this order, are
-- the columns of the Redshift table `loans.loan_performance` (dags/loans_quarterly.yaml copies
-- the files as they are: '|' between fields, \N for NULL, dates as YYYY-MM-DD).
DROP TABLE IF EXISTS processed_${QUARTER};
CREATE EXTERNAL TABLE processed_${QUARTER} (
  loan_sequence_number STRING,
  reporting_month DATE,
  current_upb DECIMAL(12,2),
  delinquency_status STRING,
  loan_age INT,
  remaining_months INT,
  current_interest_rate DECIMAL(6,3),
  zero_balance_code STRING,
  zero_balance_date DATE,
  credit_score INT,
  first_payment_date DATE,
  maturity_date DATE,
  original_upb DECIMAL(12,2),
  original_ltv INT,
  original_dti INT,
  original_interest_rate DECIMAL(6,3),
  property_state STRING,
  loan_purpose STRING,
  origination_quarter STRING
)
PARTITIONED BY (year INT)
ROW FORMAT DELIMITED FIELDS TERMINATED BY '|'
STORED AS TEXTFILE
LOCATION '${PROCESSED}/loans/';

-- YYYYMM text to the first day of that month; blank stays NULL.
INSERT OVERWRITE TABLE processed_${QUARTER} PARTITION (year)
SELECT
  p.loan_sequence_number,
  CAST(CONCAT(SUBSTR(p.monthly_reporting_period, 1, 4), '-', SUBSTR(p.monthly_reporting_period, 5, 2), '-01') AS DATE),
  CAST(p.current_actual_upb AS DECIMAL(12,2)),
  p.current_loan_delinquency_status,
  CAST(p.loan_age AS INT),
  CAST(p.remaining_months_to_legal_maturity AS INT),
  CAST(p.current_interest_rate AS DECIMAL(6,3)),
  NULLIF(p.zero_balance_code, ''),
  IF(p.zero_balance_effective_date = '', NULL,
     CAST(CONCAT(SUBSTR(p.zero_balance_effective_date, 1, 4), '-', SUBSTR(p.zero_balance_effective_date, 5, 2), '-01') AS DATE)),
  IF(o.credit_score = '9999', NULL, CAST(o.credit_score AS INT)),
  CAST(CONCAT(SUBSTR(o.first_payment_date, 1, 4), '-', SUBSTR(o.first_payment_date, 5, 2), '-01') AS DATE),
  CAST(CONCAT(SUBSTR(o.maturity_date, 1, 4), '-', SUBSTR(o.maturity_date, 5, 2), '-01') AS DATE),
  CAST(o.original_upb AS DECIMAL(12,2)),
  IF(o.original_ltv = '999', NULL, CAST(o.original_ltv AS INT)),
  IF(o.original_dti = '999', NULL, CAST(o.original_dti AS INT)),
  CAST(o.original_interest_rate AS DECIMAL(6,3)),
  o.property_state,
  o.loan_purpose,
  '${QUARTER}',
  CAST(SUBSTR(p.monthly_reporting_period, 1, 4) AS INT) AS year
FROM raw_performance_${QUARTER} p
JOIN raw_origination_${QUARTER} o ON p.loan_sequence_number = o.loan_sequence_number;

-- The training set: one row per loan, comma-separated, label first and no header, as
-- SageMaker's built-in XGBoost reads text/csv. The label is 1 when the loan was ever 60 or more
-- days delinquent (status 2 or more, or REO) in its observed months.
DROP TABLE IF EXISTS training_${QUARTER};
CREATE EXTERNAL TABLE training_${QUARTER} (
  label INT,
  credit_score INT,
  original_ltv INT,
  original_dti INT,
  original_interest_rate DOUBLE,
  original_upb DOUBLE,
  original_loan_term INT,
  number_of_borrowers INT,
  first_time_homebuyer INT
)
ROW FORMAT DELIMITED FIELDS TERMINATED BY ','
STORED AS TEXTFILE
LOCATION '${PROCESSED}/training/';

INSERT OVERWRITE TABLE training_${QUARTER}
SELECT
  MAX(IF(p.current_loan_delinquency_status = 'RA' OR CAST(p.current_loan_delinquency_status AS INT) >= 2, 1, 0)),
  COALESCE(IF(o.credit_score = '9999', NULL, CAST(o.credit_score AS INT)), 0),
  COALESCE(IF(o.original_ltv = '999', NULL, CAST(o.original_ltv AS INT)), 0),
  COALESCE(IF(o.original_dti = '999', NULL, CAST(o.original_dti AS INT)), 0),
  CAST(o.original_interest_rate AS DOUBLE),
  CAST(o.original_upb AS DOUBLE),
  CAST(o.original_loan_term AS INT),
  CAST(o.number_of_borrowers AS INT),
  IF(o.first_time_homebuyer_flag = 'Y', 1, 0)
FROM raw_origination_${QUARTER} o
JOIN raw_performance_${QUARTER} p ON p.loan_sequence_number = o.loan_sequence_number
GROUP BY o.loan_sequence_number, o.credit_score, o.original_ltv, o.original_dti, o.original_interest_rate,
         o.original_upb, o.original_loan_term, o.number_of_borrowers, o.first_time_homebuyer_flag;
