#!/usr/bin/env python3
"""Synthetic Freddie Mac Single-Family Loan-Level files, in the real layout, for local runs.

Usage: loans.py QUARTER [QUARTER...] --out DIR [--loans N] [--revision R]

For each quarter (`2024Q1`) it writes DIR/historical_data_2024Q1.zip holding the two files the
provider publishes for an origination quarter:

- historical_data_2024Q1.txt, the origination file: one line per loan, 32 pipe-delimited fields,
  no header (ORIGINATION_FIELDS below, in file order);
- historical_data_time_2024Q1.txt, the monthly performance file: one line per loan and month,
  32 pipe-delimited fields, no header (PERFORMANCE_FIELDS below).

The field lists follow the Single-Family Loan-Level Dataset's file layout (origination: 32 fields
ending with the interest-only and MI cancellation indicators; monthly performance: 32 fields
ending with the interest-bearing UPB). The values are random but plausible (credit scores
300-850, LTVs, rates, states, YYYYMM dates that agree with each other), so real parsers and the
Hive script's date conversions work on them.

The output is deterministic: the random generator is seeded with the quarter (and --revision),
and the zip members carry a fixed timestamp, so generating an unchanged quarter twice gives
byte-identical zips (the loan site then serves the same ETag, and `if_changed` skips). A new
--revision stands for the provider republishing the quarter with corrected data.

Python's standard library only. Generated files are never committed.
"""

import argparse
import io
import os
import random
import re
import sys
import zipfile

ORIGINATION_FIELDS = [
    "credit_score",
    "first_payment_date",
    "first_time_homebuyer_flag",
    "maturity_date",
    "msa",
    "mi_percent",
    "number_of_units",
    "occupancy_status",
    "original_cltv",
    "original_dti",
    "original_upb",
    "original_ltv",
    "original_interest_rate",
    "channel",
    "ppm_flag",
    "amortization_type",
    "property_state",
    "property_type",
    "postal_code",
    "loan_sequence_number",
    "loan_purpose",
    "original_loan_term",
    "number_of_borrowers",
    "seller_name",
    "servicer_name",
    "super_conforming_flag",
    "pre_harp_loan_sequence_number",
    "program_indicator",
    "harp_indicator",
    "property_valuation_method",
    "interest_only_indicator",
    "mi_cancellation_indicator",
]

PERFORMANCE_FIELDS = [
    "loan_sequence_number",
    "monthly_reporting_period",
    "current_actual_upb",
    "current_loan_delinquency_status",
    "loan_age",
    "remaining_months_to_legal_maturity",
    "defect_settlement_date",
    "modification_flag",
    "zero_balance_code",
    "zero_balance_effective_date",
    "current_interest_rate",
    "current_non_interest_bearing_upb",
    "due_date_of_last_paid_installment",
    "mi_recoveries",
    "net_sale_proceeds",
    "non_mi_recoveries",
    "total_expenses",
    "legal_costs",
    "maintenance_and_preservation_costs",
    "taxes_and_insurance",
    "miscellaneous_expenses",
    "actual_loss_calculation",
    "cumulative_modification_cost",
    "step_modification_flag",
    "payment_deferral",
    "estimated_ltv",
    "zero_balance_removal_upb",
    "delinquent_accrued_interest",
    "delinquency_due_to_disaster",
    "borrower_assistance_status_code",
    "current_month_modification_cost",
    "interest_bearing_upb",
]

assert len(ORIGINATION_FIELDS) == 32 and len(PERFORMANCE_FIELDS) == 32

STATES = ["CA", "TX", "FL", "NY", "IL", "PA", "OH", "GA", "NC", "MI", "WA", "AZ", "CO", "VA", "NJ", "MA"]
MSAS = ["31084", "19124", "33124", "35614", "16984", "37964", "12060", "47894", "42644", ""]
SELLERS = ["Other sellers", "WELLS FARGO BANK, N.A.", "U.S. BANK N.A.", "ROCKET MORTGAGE, LLC", "UNITED WHOLESALE MORTGAGE, LLC"]
SERVICERS = ["Other servicers", "WELLS FARGO BANK, N.A.", "NATIONSTAR MORTGAGE LLC", "PENNYMAC LOAN SERVICES, LLC"]
# Freddie Mac's zip timestamps are irrelevant to the data; a fixed one keeps the bytes stable.
ZIP_TIME = (2024, 1, 1, 0, 0, 0)
QUARTER = re.compile(r"^(\d{4})Q([1-4])$")


def add_months(yyyymm, months):
    year, month = divmod(yyyymm, 100)
    index = year * 12 + (month - 1) + months
    return (index // 12) * 100 + index % 12 + 1


def loan(rng, year, quarter, n):
    """One origination record (a dict keyed by ORIGINATION_FIELDS)."""
    orig_month = (quarter - 1) * 3 + rng.randint(1, 3)
    first_payment = add_months(year * 100 + orig_month, rng.choice([1, 2]))
    term = rng.choice([360, 360, 360, 240, 180])
    ltv = rng.randint(40, 97)
    mi = rng.choice([0, 0, 0, 12, 25, 30]) if ltv > 80 else 0
    upb = rng.randint(60, 760) * 1000
    return {
        "credit_score": str(rng.randint(600, 830) if rng.random() > 0.01 else 9999),
        "first_payment_date": str(first_payment),
        "first_time_homebuyer_flag": rng.choice(["Y", "N", "N", "N"]),
        "maturity_date": str(add_months(first_payment, term - 1)),
        "msa": rng.choice(MSAS),
        "mi_percent": str(mi).rjust(3, "0") if mi else "000",
        "number_of_units": str(rng.choice([1, 1, 1, 1, 2, 3, 4])),
        "occupancy_status": rng.choice(["P", "P", "P", "I", "S"]),
        "original_cltv": str(min(ltv + rng.choice([0, 0, 0, 5]), 105)),
        "original_dti": str(rng.randint(10, 50)),
        "original_upb": str(upb),
        "original_ltv": str(ltv),
        "original_interest_rate": f"{rng.randint(525, 775) / 100 + rng.choice([0, 0.125, 0.25, 0.375]):.3f}",
        "channel": rng.choice(["R", "B", "C", "T"]),
        "ppm_flag": "N",
        "amortization_type": "FRM",
        "property_state": rng.choice(STATES),
        "property_type": rng.choice(["SF", "SF", "SF", "PU", "CO", "MH"]),
        "postal_code": f"{rng.randint(100, 999)}00",
        "loan_sequence_number": f"F{year % 100:02d}Q{quarter}{n:07d}",
        "loan_purpose": rng.choice(["P", "P", "C", "N"]),
        "original_loan_term": str(term),
        "number_of_borrowers": str(rng.choice([1, 2])),
        "seller_name": rng.choice(SELLERS),
        "servicer_name": rng.choice(SERVICERS),
        "super_conforming_flag": "Y" if upb > 726000 else "",
        "pre_harp_loan_sequence_number": "",
        "program_indicator": rng.choice(["9", "9", "9", "H", "F"]),
        "harp_indicator": "",
        "property_valuation_method": rng.choice(["1", "2", "3", "9"]),
        "interest_only_indicator": "N",
        "mi_cancellation_indicator": "N" if mi else "7",
    }


def performance(rng, record):
    """The loan's monthly performance records (dicts keyed by PERFORMANCE_FIELDS)."""
    rate = float(record["original_interest_rate"])
    term = int(record["original_loan_term"])
    upb = float(record["original_upb"])
    monthly_rate = rate / 1200
    payment = upb * monthly_rate / (1 - (1 + monthly_rate) ** -term)
    first = int(record["first_payment_date"])
    months = rng.randint(6, 12)
    prepaid_at = rng.randint(3, months) if rng.random() < 0.08 else None
    delinquent_from = rng.randint(2, months) if rng.random() < 0.1 else None
    rows = []
    status = 0
    for age in range(months):
        period = add_months(first, age)
        interest = upb * monthly_rate
        if delinquent_from is not None and age >= delinquent_from:
            status += 1
        else:
            upb = max(upb - (payment - interest), 0.0)
        prepaid = prepaid_at is not None and age == prepaid_at
        row = dict.fromkeys(PERFORMANCE_FIELDS, "")
        row.update(
            {
                "loan_sequence_number": record["loan_sequence_number"],
                "monthly_reporting_period": str(period),
                "current_actual_upb": "0.00" if prepaid else f"{upb:.2f}",
                "current_loan_delinquency_status": str(status),
                "loan_age": str(age),
                "remaining_months_to_legal_maturity": str(term - age - 1),
                "modification_flag": "",
                "zero_balance_code": "01" if prepaid else "",
                "zero_balance_effective_date": str(period) if prepaid else "",
                "current_interest_rate": f"{rate:.3f}",
                "current_non_interest_bearing_upb": "0.00",
                "due_date_of_last_paid_installment": str(add_months(period, -status)) if status else "",
                "step_modification_flag": "",
                "payment_deferral": "",
                "estimated_ltv": str(max(int(record["original_ltv"]) - age // 3, 1)),
                "zero_balance_removal_upb": f"{upb:.2f}" if prepaid else "",
                "delinquency_due_to_disaster": "",
                "borrower_assistance_status_code": "",
                "current_month_modification_cost": "",
                "interest_bearing_upb": "0.00" if prepaid else f"{upb:.2f}",
            }
        )
        rows.append(row)
        if prepaid:
            break
    return rows


def generate(quarter, loans, revision):
    """The zip's bytes for one quarter."""
    match = QUARTER.match(quarter)
    if not match:
        raise SystemExit(f"loans.py: {quarter!r} is not a quarter; write e.g. 2024Q1")
    year, q = int(match.group(1)), int(match.group(2))
    rng = random.Random(f"{quarter}/{revision}")
    origination = io.StringIO()
    performance_file = io.StringIO()
    for n in range(1, loans + 1):
        record = loan(rng, year, q, n)
        origination.write("|".join(record[f] for f in ORIGINATION_FIELDS) + "\n")
        for row in performance(rng, record):
            performance_file.write("|".join(row[f] for f in PERFORMANCE_FIELDS) + "\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in (
            (f"historical_data_{quarter}.txt", origination.getvalue()),
            (f"historical_data_time_{quarter}.txt", performance_file.getvalue()),
        ):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, text.encode("ascii"))
    return buffer.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("quarters", nargs="+", metavar="QUARTER", help="e.g. 2024Q1")
    parser.add_argument("--out", required=True, help="the folder to write the zips to")
    parser.add_argument("--loans", type=int, default=250, help="loans per quarter (default 250)")
    parser.add_argument("--revision", type=int, default=1, help="a new revision republishes the quarter with other data")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for quarter in args.quarters:
        data = generate(quarter, args.loans, args.revision)
        path = os.path.join(args.out, f"historical_data_{quarter}.zip")
        # Replace atomically, and only when the bytes differ, so the site never serves half a file.
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    print(path)
                    continue
        except FileNotFoundError:
            pass
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
