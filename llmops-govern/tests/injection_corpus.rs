//! Detection and false-positive rates of the heuristic detector on a labelled corpus
//! (`tests/data/injection_corpus.jsonl`: attacks, and benign texts that use the same trigger
//! words). Run with `--nocapture` to print the numbers reproduced in docs/governance.md.
#![allow(clippy::unwrap_used)] // test code: a panic is a failure

use llmops_govern::injection::HeuristicDetector;

#[derive(serde::Deserialize)]
struct Row {
    text: String,
    attack: bool,
}

#[test]
fn detection_and_false_positive_rates() {
    let rows: Vec<Row> = include_str!("data/injection_corpus.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let d = HeuristicDetector::new();
    let (mut tp, mut fn_, mut fp, mut tn) = (0u32, 0u32, 0u32, 0u32);
    for row in &rows {
        let r = d.scan(&row.text);
        match (row.attack, r.flagged) {
            (true, true) => tp += 1,
            (true, false) => {
                fn_ += 1;
                println!("MISSED ({:.2}): {:?}", r.score, row.text);
            }
            (false, true) => {
                fp += 1;
                println!(
                    "FALSE POSITIVE ({:.2} {:?}): {:?}",
                    r.score,
                    r.signals.iter().map(|s| s.name).collect::<Vec<_>>(),
                    row.text
                );
            }
            (false, false) => tn += 1,
        }
    }
    let detection = f64::from(tp) / f64::from(tp + fn_);
    let fpr = f64::from(fp) / f64::from(fp + tn);
    println!(
        "attacks {}, detected {tp}, missed {fn_}: detection rate {detection:.3}",
        tp + fn_
    );
    println!(
        "benign {}, flagged {fp}: false-positive rate {fpr:.3}",
        fp + tn
    );
    assert!(tp + fn_ >= 50 && fp + tn >= 50, "corpus too small");
    assert!(detection >= 0.8, "detection rate {detection:.3}");
    assert!(fpr <= 0.1, "false-positive rate {fpr:.3}");
}
