//! Judge calibration against human labels.
//!
//! A judge earns the right to gate by agreeing with people. [`calibrate`] grades a set of
//! human-labelled outputs twice with the judge and reports:
//!
//! - **raw agreement** and **Cohen's κ** (chance-corrected; for ordinal scales also the
//!   quadratic-weighted κ, which counts a 4-vs-5 disagreement as smaller than 1-vs-5);
//! - the human and judge **base rates** of passing, **TPR** (judge passes what humans pass)
//!   and **FPR** (judge passes what humans fail) — 90% agreement can hide a lenient judge;
//! - **self-consistency**: how often the judge agrees with itself on a second grading.
//!
//! The [`CalibrationRecord`] is bound to the judge model and the hash of its rubric: editing
//! the rubric invalidates it. [`check_gating`] is what a suite uses to refuse a gate on a
//! judge whose recorded κ is below the floor.
//!
//! Labels file (JSONL), one labelled output per line:
//!
//! ```json
//! {"id": "q1", "input": "What is 2+2?", "output": "4", "label": 5}
//! {"id": "q2", "input": {"messages": [{"role": "user", "content": "Capital of Peru?"}]}, "output": "Quito", "expected": "Lima", "label": "fail"}
//! ```
//!
//! `label` is an integer on the judge's scale (ordinal) or pass/fail (`"pass"`, `"fail"`,
//! `true`, `false`).

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use llmops_core::{ChatRequest, EvalInput, Message};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataset::type_name;
use crate::error::{EvalError, Result};
use crate::judge::RubricJudge;
use crate::run::JudgeInfo;

/// A human label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Label {
    /// A score on the judge's scale.
    Score(i64),
    /// Pass or fail.
    Pass(bool),
}

/// One human-labelled output.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LabelledOutput {
    /// Its id.
    pub id: String,
    /// The conversation that produced the output.
    pub messages: Vec<Message>,
    /// The output.
    pub output: String,
    /// The reference answer, if any.
    pub expected: Option<Value>,
    /// The human label.
    pub label: Label,
}

/// Loads a labels JSONL file.
pub fn load_labels(path: &Path) -> Result<Vec<LabelledOutput>> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |field: &str, m: String| EvalError::dataset(path, lineno, field, m);
        let v: Value =
            serde_json::from_str(line).map_err(|e| err("-", format!("invalid JSON: {e}")))?;
        let id = match v.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(err("id", "missing or not a string".into())),
        };
        let messages = match v.get("input") {
            Some(Value::String(s)) => vec![Message::user(s.clone())],
            Some(Value::Object(o)) => match o.get("messages") {
                Some(m) => serde_json::from_value(m.clone())
                    .map_err(|e| err("input.messages", e.to_string()))?,
                None => return Err(err("input.messages", "missing".into())),
            },
            Some(other) => {
                return Err(err(
                    "input",
                    format!("expected a string or messages, got {}", type_name(other)),
                ));
            }
            None => return Err(err("input", "missing".into())),
        };
        let output = match v.get("output") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(err("output", "missing or not a string".into())),
        };
        let label = match v.get("label") {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(s) => Label::Score(s),
                None => return Err(err("label", format!("expected an integer score, got {n}"))),
            },
            Some(Value::Bool(b)) => Label::Pass(*b),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "pass" | "yes" | "true" => Label::Pass(true),
                "fail" | "no" | "false" => Label::Pass(false),
                other => {
                    return Err(err(
                        "label",
                        format!("expected pass/fail or a score, got {other:?}"),
                    ));
                }
            },
            _ => return Err(err("label", "missing".into())),
        };
        out.push(LabelledOutput {
            id,
            messages,
            output,
            expected: v.get("expected").cloned(),
            label,
        });
    }
    if out.is_empty() {
        return Err(EvalError::dataset(path, 1, "-", "no labelled outputs"));
    }
    Ok(out)
}

/// How disagreements are weighted in κ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KappaWeights {
    /// Every disagreement counts fully (nominal categories).
    Unweighted,
    /// Disagreement weighted by |i − j| / (k − 1).
    Linear,
    /// Disagreement weighted by ((i − j) / (k − 1))² (ordinal scales).
    Quadratic,
}

/// Cohen's κ of two raters over `k` categories (`a[i]`, `b[i]` in `0..k`). Returns 1 when
/// both raters agree perfectly on a single category (κ is otherwise undefined there).
pub fn cohen_kappa(a: &[usize], b: &[usize], k: usize, weights: KappaWeights) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 || k == 0 {
        return f64::NAN;
    }
    let mut obs = vec![vec![0.0f64; k]; k];
    let (mut ra, mut rb) = (vec![0.0f64; k], vec![0.0f64; k]);
    for (&x, &y) in a.iter().zip(b).take(n) {
        if x < k && y < k {
            obs[x][y] += 1.0;
            ra[x] += 1.0;
            rb[y] += 1.0;
        }
    }
    let total: f64 = ra.iter().sum();
    let w = |i: usize, j: usize| -> f64 {
        if k == 1 {
            return 0.0;
        }
        let d = (i as f64 - j as f64).abs() / (k - 1) as f64;
        match weights {
            KappaWeights::Unweighted => f64::from(u8::from(i != j)),
            KappaWeights::Linear => d,
            KappaWeights::Quadratic => d * d,
        }
    };
    let (mut do_, mut de) = (0.0, 0.0);
    for i in 0..k {
        for j in 0..k {
            do_ += w(i, j) * obs[i][j] / total;
            de += w(i, j) * ra[i] * rb[j] / (total * total);
        }
    }
    if de == 0.0 {
        return if do_ == 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - do_ / de
}

/// The result of calibrating a judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CalibrationRecord {
    /// The judge this record is valid for.
    pub judge: JudgeInfo,
    /// When it was made (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Labelled outputs graded by the judge (errors excluded).
    pub n: usize,
    /// Outputs the judge could not grade.
    pub errors: usize,
    /// Whether labels were scores (ordinal) or pass/fail.
    pub ordinal: bool,
    /// Fraction of outputs where judge and human gave the same category.
    pub raw_agreement: f64,
    /// Cohen's κ (unweighted).
    pub kappa: f64,
    /// Quadratic-weighted κ (ordinal labels only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_kappa: Option<f64>,
    /// Fraction of outputs humans passed (the base rate).
    pub human_pass_rate: f64,
    /// Fraction of outputs the judge passed.
    pub judge_pass_rate: f64,
    /// Judge passes among human passes.
    pub tpr: f64,
    /// Judge passes among human fails.
    pub fpr: f64,
    /// Fraction of outputs the judge graded the same twice.
    pub self_consistency: f64,
    /// Confusion matrix, rows = human category, columns = judge category.
    pub confusion: Vec<Vec<u64>>,
}

impl CalibrationRecord {
    /// The κ the floor applies to: weighted for ordinal labels, unweighted otherwise.
    pub fn gating_kappa(&self) -> f64 {
        self.weighted_kappa.unwrap_or(self.kappa)
    }

    /// Loads a record.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| EvalError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Saves the record as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| EvalError::Config(e.to_string()))?;
        std::fs::write(path, json).map_err(|e| EvalError::io(path, e))
    }

    /// A human-readable summary.
    pub fn summary(&self) -> String {
        format!(
            "judge {} (rubric {}): n={} errors={} agreement={:.1}% κ={:.3}{} base rate human {:.1}% / judge {:.1}% TPR={:.1}% FPR={:.1}% self-consistency={:.1}%",
            self.judge.model,
            self.judge.rubric_hash,
            self.n,
            self.errors,
            self.raw_agreement * 100.0,
            self.kappa,
            self.weighted_kappa
                .map(|w| format!(" weighted κ={w:.3}"))
                .unwrap_or_default(),
            self.human_pass_rate * 100.0,
            self.judge_pass_rate * 100.0,
            self.tpr * 100.0,
            self.fpr * 100.0,
            self.self_consistency * 100.0
        )
    }
}

/// Grades every labelled output twice with `judge` and compares with the labels.
pub async fn calibrate(
    judge: &RubricJudge,
    items: &[LabelledOutput],
    concurrency: usize,
) -> Result<CalibrationRecord> {
    let (min, max) = judge.scale_bounds();
    let threshold = judge.pass_threshold();
    let ordinal = items.iter().all(|i| matches!(i.label, Label::Score(_)));
    let binary = items.iter().all(|i| matches!(i.label, Label::Pass(_)));
    if !ordinal && !binary {
        return Err(EvalError::Config(
            "labels mix scores and pass/fail: use one kind".into(),
        ));
    }
    for i in items {
        if let Label::Score(s) = i.label
            && !(min..=max).contains(&s)
        {
            return Err(EvalError::Config(format!(
                "label {s} of `{}` is outside the judge's scale {min}..={max}",
                i.id
            )));
        }
    }
    let grades: Vec<_> = futures_util::stream::iter(items.iter())
        .map(|item| async move {
            let mut input = EvalInput::new(
                ChatRequest::new("labelled", item.messages.clone()),
                item.output.clone(),
            );
            input.expected = item.expected.clone();
            let first = judge.grade(&input).await;
            let second = judge.grade(&input).await;
            (item, first, second)
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;

    let normalize = |s: i64| (s - min) as f64 / (max - min) as f64;
    let k = if ordinal { (max - min + 1) as usize } else { 2 };
    let (mut human, mut judged) = (Vec::new(), Vec::new());
    let (mut errors, mut consistent, mut twice) = (0usize, 0usize, 0usize);
    let (mut hp, mut jp, mut tp, mut fp) = (0usize, 0usize, 0usize, 0usize);
    for (item, first, second) in grades {
        let Ok(g) = first else {
            errors += 1;
            continue;
        };
        if let Ok(g2) = &second {
            twice += 1;
            consistent += usize::from(g2.raw == g.raw);
        }
        let judge_pass = g.normalized >= threshold;
        let (h_cat, j_cat, human_pass) = match item.label {
            Label::Score(s) => (
                (s - min) as usize,
                (g.raw - min) as usize,
                normalize(s) >= threshold,
            ),
            Label::Pass(p) => (usize::from(p), usize::from(judge_pass), p),
        };
        human.push(h_cat);
        judged.push(j_cat);
        hp += usize::from(human_pass);
        jp += usize::from(judge_pass);
        tp += usize::from(human_pass && judge_pass);
        fp += usize::from(!human_pass && judge_pass);
    }
    let n = human.len();
    if n == 0 {
        return Err(EvalError::Config(
            "the judge could not grade any labelled output".into(),
        ));
    }
    let mut confusion = vec![vec![0u64; k]; k];
    for (&h, &j) in human.iter().zip(&judged) {
        confusion[h][j] += 1;
    }
    let agree = human.iter().zip(&judged).filter(|(h, j)| h == j).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(CalibrationRecord {
        judge: judge.identity(),
        created_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        n,
        errors,
        ordinal,
        raw_agreement: ratio(agree, n),
        kappa: cohen_kappa(&human, &judged, k, KappaWeights::Unweighted),
        weighted_kappa: ordinal.then(|| cohen_kappa(&human, &judged, k, KappaWeights::Quadratic)),
        human_pass_rate: ratio(hp, n),
        judge_pass_rate: ratio(jp, n),
        tpr: ratio(tp, hp),
        fpr: ratio(fp, n - hp),
        self_consistency: ratio(consistent, twice),
        confusion,
    })
}

/// What a gating judge must show.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GatingPolicy {
    /// The recorded calibration.
    pub calibration: Option<PathBuf>,
    /// The κ floor (default 0.6).
    pub min_kappa: f64,
    /// The fewest labels (default 50).
    pub min_labels: usize,
}

impl Default for GatingPolicy {
    fn default() -> Self {
        Self {
            calibration: None,
            min_kappa: 0.6,
            min_labels: 50,
        }
    }
}

/// Checks that the judge `identity` may gate under `policy`; the error says why not.
pub fn check_gating(
    name: &str,
    identity: &JudgeInfo,
    policy: &GatingPolicy,
) -> Result<CalibrationRecord> {
    let refuse = |why: String| EvalError::GateRefused(format!("judge `{name}` cannot gate: {why}"));
    let Some(path) = &policy.calibration else {
        return Err(refuse("it has no recorded calibration (run `llmops eval calibrate` and set `calibration = \"...\"`)".into()));
    };
    let record = CalibrationRecord::load(path)
        .map_err(|e| refuse(format!("cannot read its calibration: {e}")))?;
    if record.judge.model != identity.model {
        return Err(refuse(format!(
            "its calibration was made with model `{}`, the suite uses `{}`",
            record.judge.model, identity.model
        )));
    }
    if record.judge.rubric_hash != identity.rubric_hash {
        return Err(refuse(format!(
            "the rubric changed since calibration (hash {} recorded, {} now): recalibrate",
            record.judge.rubric_hash, identity.rubric_hash
        )));
    }
    if record.n < policy.min_labels {
        return Err(refuse(format!(
            "calibrated on {} labels, at least {} are required",
            record.n, policy.min_labels
        )));
    }
    let kappa = record.gating_kappa();
    if kappa.is_nan() || kappa < policy.min_kappa {
        return Err(refuse(format!(
            "κ = {kappa:.3} with human labels is below the floor {:.2}",
            policy.min_kappa
        )));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llmops_core::mock::{MockProvider, MockReply};
    use serde_json::json;

    use super::*;

    #[test]
    fn kappa_known_values() {
        // Classic 2x2 example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no → κ = 0.4.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (x, y, n) in [(1, 1, 20), (1, 0, 5), (0, 1, 10), (0, 0, 15)] {
            for _ in 0..n {
                a.push(x);
                b.push(y);
            }
        }
        assert!((cohen_kappa(&a, &b, 2, KappaWeights::Unweighted) - 0.4).abs() < 1e-12);
        assert_eq!(
            cohen_kappa(&[0, 1, 2], &[0, 1, 2], 3, KappaWeights::Quadratic),
            1.0
        );
        // Near misses cost less with weights.
        let h = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4];
        let j = [1, 1, 2, 3, 3, 0, 2, 2, 3, 4];
        let u = cohen_kappa(&h, &j, 5, KappaWeights::Unweighted);
        let q = cohen_kappa(&h, &j, 5, KappaWeights::Quadratic);
        assert!(q > u, "{q} vs {u}");
        assert_eq!(
            cohen_kappa(&[1, 1], &[1, 1], 2, KappaWeights::Unweighted),
            1.0
        );
    }

    fn item(id: &str, label: Label) -> LabelledOutput {
        LabelledOutput {
            id: id.into(),
            messages: vec![Message::user("q")],
            output: id.into(),
            expected: None,
            label,
        }
    }

    #[tokio::test]
    async fn calibrates_and_gates() {
        // The judge answers 5 for every output; humans pass half.
        let mock = MockProvider::new("j").default_reply(MockReply::tool_call(
            "submit_grade",
            json!({"reasoning": "r", "score": 5}),
        ));
        let judge = RubricJudge::new("q", Arc::new(mock), "judge-1", "Correct?");
        let items: Vec<_> = (0..60)
            .map(|i| item(&format!("o{i}"), Label::Pass(i % 2 == 0)))
            .collect();
        let rec = calibrate(&judge, &items, 4).await.unwrap();
        assert_eq!(rec.n, 60);
        assert!((rec.raw_agreement - 0.5).abs() < 1e-9);
        assert_eq!(rec.tpr, 1.0);
        assert_eq!(rec.fpr, 1.0);
        assert_eq!(rec.self_consistency, 1.0);
        assert!(rec.kappa.abs() < 1e-9);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cal.json");
        rec.save(&path).unwrap();
        let policy = GatingPolicy {
            calibration: Some(path.clone()),
            ..GatingPolicy::default()
        };
        let e = check_gating("q", &judge.identity(), &policy)
            .unwrap_err()
            .to_string();
        assert!(e.contains("below the floor 0.60"), "{e}");

        let none = GatingPolicy::default();
        assert!(
            check_gating("q", &judge.identity(), &none)
                .unwrap_err()
                .to_string()
                .contains("no recorded calibration")
        );

        let mut good = rec.clone();
        good.kappa = 0.8;
        good.save(&path).unwrap();
        assert!(check_gating("q", &judge.identity(), &policy).is_ok());
        let other = RubricJudge::new(
            "q",
            Arc::new(MockProvider::new("j")),
            "judge-1",
            "Correct and polite?",
        );
        assert!(
            check_gating("q", &other.identity(), &policy)
                .unwrap_err()
                .to_string()
                .contains("rubric changed")
        );
    }

    #[test]
    fn labels_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.jsonl");
        std::fs::write(&p, "{\"id\": \"a\", \"input\": \"q\", \"output\": \"x\", \"label\": 4}\n{\"id\": \"b\", \"input\": \"q\", \"output\": \"x\", \"label\": \"maybe\"}\n").unwrap();
        let e = load_labels(&p).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "labels.jsonl:2: field `label`: expected pass/fail or a score, got \"maybe\""
            ),
            "{e}"
        );
    }
}
