//! Precision and recall per type on a labelled corpus (`tests/data/pii_corpus.jsonl`: 215
//! strings, 183 labelled entities, 80 strings with none, many of them look-alikes: Luhn-invalid
//! cards, bad IBAN checksums, SSNs in invalid ranges, versions, times, hashes).
//!
//! Run with `--nocapture` to print the table reproduced in docs/governance.md.
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

#[test]
fn precision_and_recall_per_type() {
    let corpus = include_str!("data/pii_corpus.jsonl");
    let rows: Vec<Row> = corpus
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 200, "the corpus has {} strings", rows.len());
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
    println!("| type | labelled | found | TP | FP | FN | precision | recall |");
    println!("|---|---|---|---|---|---|---|---|");
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (t, c) in &per {
        let p = f64::from(c.tp) / f64::from((c.tp + c.fp).max(1));
        let r = f64::from(c.tp) / f64::from((c.tp + c.fn_).max(1));
        println!(
            "| {t} | {} | {} | {} | {} | {} | {:.3} | {:.3} |",
            c.tp + c.fn_,
            c.tp + c.fp,
            c.tp,
            c.fp,
            c.fn_,
            p,
            r
        );
        tp += c.tp;
        fp += c.fp;
        fn_ += c.fn_;
        assert!(
            p >= 0.9 && r >= 0.9,
            "{t}: precision {p:.3} recall {r:.3}\n{}",
            errors.join("\n")
        );
    }
    let p = f64::from(tp) / f64::from(tp + fp);
    let r = f64::from(tp) / f64::from(tp + fn_);
    println!(
        "| **all** | {} | {} | {tp} | {fp} | {fn_} | {p:.3} | {r:.3} |",
        tp + fn_,
        tp + fp
    );
    for e in &errors {
        println!("{e}");
    }
    assert!(
        p >= 0.95 && r >= 0.95,
        "overall precision {p:.3} recall {r:.3}"
    );
}
