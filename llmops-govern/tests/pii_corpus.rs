//! Precision and recall per type on two labelled corpora:
//!
//! - `tests/data/pii_corpus.jsonl`: 215 strings, 183 labelled entities, 80 strings with none,
//!   many of them look-alikes (Luhn-invalid cards, bad IBAN checksums, SSNs in invalid ranges,
//!   versions, times, hashes). The recognizers were tuned while this corpus was written.
//! - `tests/data/pii_holdout.jsonl`: 40 strings written afterwards and never tuned against,
//!   with harder formats (international prefixes written `00`, zone ids, CIDR suffixes).
//!
//! Run with `--nocapture` to print the tables reproduced in docs/governance.md.
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use std::collections::BTreeMap;

use llmops_govern::pii::PiiScanner;

#[derive(serde::Deserialize)]
struct Row {
    text: String,
    pii: Vec<(String, String)>,
}

#[derive(Default)]
struct Counts {
    tp: u32,
    fp: u32,
    fn_: u32,
}

impl Counts {
    fn precision(&self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fp).max(1))
    }
    fn recall(&self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fn_).max(1))
    }
}

/// Scores the scanner on `corpus`; prints the table and the errors; returns the counts per
/// type and overall.
fn evaluate(corpus: &str) -> (BTreeMap<String, Counts>, Counts) {
    let rows: Vec<Row> = corpus
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let scanner = PiiScanner::new();
    let mut per: BTreeMap<String, Counts> = BTreeMap::new();
    let mut errors = Vec::new();
    for row in &rows {
        let mut expected: Vec<(String, usize, usize)> = row
            .pii
            .iter()
            .map(|(t, v)| {
                let start = row
                    .text
                    .find(v.as_str())
                    .unwrap_or_else(|| panic!("label {v:?} not in {:?}", row.text));
                (t.clone(), start, start + v.len())
            })
            .collect();
        for f in scanner.scan(&row.text) {
            let key = (f.kind.as_str().to_owned(), f.start, f.end);
            let c = per.entry(key.0.clone()).or_default();
            if let Some(i) = expected.iter().position(|e| *e == key) {
                expected.remove(i);
                c.tp += 1;
            } else {
                c.fp += 1;
                errors.push(format!(
                    "FP {} {:?} in {:?}",
                    key.0,
                    &row.text[f.start..f.end],
                    row.text
                ));
            }
        }
        for (t, s, e) in expected {
            per.entry(t.clone()).or_default().fn_ += 1;
            errors.push(format!("FN {t} {:?} in {:?}", &row.text[s..e], row.text));
        }
    }
    println!("{} strings", rows.len());
    println!("| type | labelled | found | TP | FP | FN | precision | recall |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut all = Counts::default();
    for (t, c) in &per {
        println!(
            "| {t} | {} | {} | {} | {} | {} | {:.3} | {:.3} |",
            c.tp + c.fn_,
            c.tp + c.fp,
            c.tp,
            c.fp,
            c.fn_,
            c.precision(),
            c.recall()
        );
        all.tp += c.tp;
        all.fp += c.fp;
        all.fn_ += c.fn_;
    }
    println!(
        "| **all** | {} | {} | {} | {} | {} | {:.3} | {:.3} |",
        all.tp + all.fn_,
        all.tp + all.fp,
        all.tp,
        all.fp,
        all.fn_,
        all.precision(),
        all.recall()
    );
    for e in &errors {
        println!("{e}");
    }
    (per, all)
}

#[test]
fn precision_and_recall_per_type() {
    let corpus = include_str!("data/pii_corpus.jsonl");
    assert!(corpus.lines().count() >= 200);
    let (per, all) = evaluate(corpus);
    for (t, c) in &per {
        assert!(
            c.precision() >= 0.9 && c.recall() >= 0.9,
            "{t}: {:.3} / {:.3}",
            c.precision(),
            c.recall()
        );
    }
    assert!(all.precision() >= 0.95 && all.recall() >= 0.95);
}

#[test]
fn held_out_corpus() {
    let (_, all) = evaluate(include_str!("data/pii_holdout.jsonl"));
    // Guards against regressions only; the numbers are in docs/governance.md.
    assert!(
        all.precision() >= 0.8,
        "holdout precision {:.3}",
        all.precision()
    );
    assert!(all.recall() >= 0.6, "holdout recall {:.3}", all.recall());
}
