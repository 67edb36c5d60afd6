//! String evaluators: exact / contains / starts-with / regex, Levenshtein, ROUGE-L, BLEU.

use std::collections::HashMap;

use async_trait::async_trait;
use llmops_core::{EvalInput, Evaluator, Score};
use regex::{Regex, RegexBuilder};

use super::{Reference, preview};

/// How [`StringMatch`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatchMode {
    /// The trimmed output equals a reference.
    Exact,
    /// The output contains a reference.
    Contains,
    /// The trimmed output starts with a reference.
    StartsWith,
    /// A regular expression (from the reference) matches the output.
    Regex,
}

/// Exact / contains / starts-with / regex matching against one or several references (a list
/// of acceptable answers passes when any matches).
#[derive(Debug)]
pub struct StringMatch {
    name: String,
    mode: MatchMode,
    reference: Reference,
    ignore_case: bool,
    compiled: Option<Regex>,
}

impl StringMatch {
    /// A matcher of `mode` against `reference`.
    pub fn new(name: impl Into<String>, mode: MatchMode, reference: Reference) -> Self {
        Self {
            name: name.into(),
            mode,
            reference,
            ignore_case: false,
            compiled: None,
        }
    }

    /// Output equals the reference (after trimming).
    pub fn exact(name: impl Into<String>, reference: Reference) -> Self {
        Self::new(name, MatchMode::Exact, reference)
    }

    /// Output contains the reference.
    pub fn contains(name: impl Into<String>, reference: Reference) -> Self {
        Self::new(name, MatchMode::Contains, reference)
    }

    /// Output starts with the reference (after trimming).
    pub fn starts_with(name: impl Into<String>, reference: Reference) -> Self {
        Self::new(name, MatchMode::StartsWith, reference)
    }

    /// A fixed regular expression; fails now if `pattern` does not compile.
    pub fn regex(
        name: impl Into<String>,
        pattern: &str,
        ignore_case: bool,
    ) -> Result<Self, regex::Error> {
        let compiled = RegexBuilder::new(pattern)
            .case_insensitive(ignore_case)
            .build()?;
        Ok(Self {
            name: name.into(),
            mode: MatchMode::Regex,
            reference: Reference::Literal(pattern.into()),
            ignore_case,
            compiled: Some(compiled),
        })
    }

    /// Compares case-insensitively (builder style).
    #[must_use]
    pub fn ignore_case(mut self, yes: bool) -> Self {
        self.ignore_case = yes;
        if let (Some(_), Reference::Literal(serde_json::Value::String(p))) =
            (&self.compiled, &self.reference)
        {
            self.compiled = RegexBuilder::new(p).case_insensitive(yes).build().ok();
        }
        self
    }

    fn matches(&self, output: &str, reference: &str) -> llmops_core::Result<bool> {
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_lowercase()
            } else {
                s.to_owned()
            }
        };
        Ok(match self.mode {
            MatchMode::Exact => fold(output.trim()) == fold(reference.trim()),
            MatchMode::Contains => fold(output).contains(&fold(reference)),
            MatchMode::StartsWith => fold(output.trim_start()).starts_with(&fold(reference.trim())),
            MatchMode::Regex => {
                if let Some(re) = &self.compiled {
                    re.is_match(output)
                } else {
                    let re = RegexBuilder::new(reference)
                        .case_insensitive(self.ignore_case)
                        .build()
                        .map_err(|e| {
                            llmops_core::Error::invalid_request(
                                format!("invalid regex {reference:?} in the case: {e}"),
                                None,
                            )
                        })?;
                    re.is_match(output)
                }
            }
        })
    }
}

#[async_trait]
impl Evaluator for StringMatch {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let refs = self.reference.strings(input)?;
        let (verb, negated) = match self.mode {
            MatchMode::Exact => ("equals", "does not equal"),
            MatchMode::Contains => ("contains", "does not contain"),
            MatchMode::StartsWith => ("starts with", "does not start with"),
            MatchMode::Regex => ("matches", "does not match"),
        };
        for r in &refs {
            if self.matches(&input.output, r)? {
                return Ok(Score::pass_fail(
                    true,
                    format!("output {verb} {}", preview(r)),
                ));
            }
        }
        let wanted = refs
            .iter()
            .map(|r| preview(r))
            .collect::<Vec<_>>()
            .join(" or ");
        Ok(Score::pass_fail(
            false,
            format!("output {} {negated} {wanted}", preview(&input.output)),
        ))
    }
}

/// Levenshtein (edit-distance) similarity over characters: `1 − distance / max(len)`.
#[derive(Debug)]
pub struct Levenshtein {
    name: String,
    reference: Reference,
    threshold: f64,
}

impl Levenshtein {
    /// Similarity to `reference`, passing at `threshold` (default 0.8).
    pub fn new(name: impl Into<String>, reference: Reference) -> Self {
        Self {
            name: name.into(),
            reference,
            threshold: 0.8,
        }
    }

    /// Sets the threshold (builder style).
    #[must_use]
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }
}

/// Normalized Levenshtein similarity of two strings, in `[0, 1]` (1 when both are empty).
pub fn levenshtein(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let max = a.len().max(b.len());
    if max == 0 {
        return 1.0;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    1.0 - prev[b.len()] as f64 / max as f64
}

#[async_trait]
impl Evaluator for Levenshtein {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let refs = self.reference.strings(input)?;
        let best = best_of(&refs, |r| levenshtein(input.output.trim(), r.trim()));
        Ok(Score::new(
            best,
            self.threshold,
            format!("edit similarity {best:.3} (threshold {})", self.threshold),
        ))
    }
}

fn best_of(refs: &[String], f: impl Fn(&str) -> f64) -> f64 {
    refs.iter().map(|r| f(r)).fold(0.0, f64::max)
}

fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// ROUGE-L F-measure (β = 1) of the token longest common subsequence.
pub fn rouge_l(candidate: &str, reference: &str) -> f64 {
    let c = tokens(candidate);
    let r = tokens(reference);
    if c.is_empty() || r.is_empty() {
        return if c.is_empty() && r.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut prev = vec![0usize; r.len() + 1];
    let mut cur = vec![0usize; r.len() + 1];
    for tc in &c {
        for (j, tr) in r.iter().enumerate() {
            cur[j + 1] = if tc == tr {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let lcs = prev[r.len()] as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let p = lcs / c.len() as f64;
    let rec = lcs / r.len() as f64;
    2.0 * p * rec / (p + rec)
}

/// Sentence BLEU-4 against one or more references, with add-one smoothing of the 2- to
/// 4-gram precisions (Lin & Och 2004) and the brevity penalty against the closest reference
/// length.
pub fn bleu(candidate: &str, references: &[String]) -> f64 {
    let c = tokens(candidate);
    let refs: Vec<Vec<String>> = references.iter().map(|r| tokens(r)).collect();
    if c.is_empty() || refs.iter().all(Vec::is_empty) {
        return 0.0;
    }
    let mut log_sum = 0.0;
    for n in 1..=4usize {
        let cand = ngram_counts(&c, n);
        let total: usize = cand.values().sum();
        let mut max_ref: HashMap<&[String], usize> = HashMap::new();
        for r in &refs {
            for (g, k) in ngram_counts(r, n) {
                let e = max_ref.entry(g).or_insert(0);
                *e = (*e).max(k);
            }
        }
        let clipped: usize = cand
            .iter()
            .map(|(g, k)| (*k).min(max_ref.get(g).copied().unwrap_or(0)))
            .sum();
        let (num, den) = if n == 1 {
            (clipped as f64, total as f64)
        } else {
            (clipped as f64 + 1.0, total as f64 + 1.0)
        };
        if num == 0.0 || den == 0.0 {
            return 0.0;
        }
        log_sum += (num / den).ln() / 4.0;
    }
    let c_len = c.len() as f64;
    let r_len = refs
        .iter()
        .map(|r| r.len() as f64)
        .min_by(|a, b| {
            (a - c_len)
                .abs()
                .total_cmp(&(b - c_len).abs())
                .then(a.total_cmp(b))
        })
        .unwrap_or(c_len);
    let bp = if c_len > r_len {
        1.0
    } else {
        (1.0 - r_len / c_len).exp()
    };
    bp * log_sum.exp()
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut m = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

/// ROUGE-L against the reference (the best over several references).
#[derive(Debug)]
pub struct RougeL {
    name: String,
    reference: Reference,
    threshold: f64,
}

impl RougeL {
    /// ROUGE-L against `reference`, passing at `threshold` (default 0.5).
    pub fn new(name: impl Into<String>, reference: Reference) -> Self {
        Self {
            name: name.into(),
            reference,
            threshold: 0.5,
        }
    }

    /// Sets the threshold (builder style).
    #[must_use]
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }
}

#[async_trait]
impl Evaluator for RougeL {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let refs = self.reference.strings(input)?;
        let best = best_of(&refs, |r| rouge_l(&input.output, r));
        Ok(Score::new(
            best,
            self.threshold,
            format!("ROUGE-L F1 {best:.3} (threshold {})", self.threshold),
        ))
    }
}

/// Sentence BLEU-4 against the reference(s).
#[derive(Debug)]
pub struct Bleu {
    name: String,
    reference: Reference,
    threshold: f64,
}

impl Bleu {
    /// BLEU against `reference`, passing at `threshold` (default 0.5).
    pub fn new(name: impl Into<String>, reference: Reference) -> Self {
        Self {
            name: name.into(),
            reference,
            threshold: 0.5,
        }
    }

    /// Sets the threshold (builder style).
    #[must_use]
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }
}

#[async_trait]
impl Evaluator for Bleu {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, input: &EvalInput) -> llmops_core::Result<Score> {
        let refs = self.reference.strings(input)?;
        let b = bleu(&input.output, &refs);
        Ok(Score::new(
            b,
            self.threshold,
            format!("BLEU {b:.3} (threshold {})", self.threshold),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_util::input;
    use super::*;

    #[tokio::test]
    async fn string_modes() {
        let exp = Some(json!("Paris"));
        let e = StringMatch::exact("e", Reference::Expected);
        assert!(
            e.evaluate(&input(" Paris\n", exp.clone()))
                .await
                .unwrap()
                .passed
        );
        assert!(
            !e.evaluate(&input("paris", exp.clone()))
                .await
                .unwrap()
                .passed
        );
        let e = StringMatch::exact("e", Reference::Expected).ignore_case(true);
        assert!(
            e.evaluate(&input("paris", exp.clone()))
                .await
                .unwrap()
                .passed
        );

        let c = StringMatch::contains("c", Reference::Expected).ignore_case(true);
        assert!(
            c.evaluate(&input("It is PARIS.", exp.clone()))
                .await
                .unwrap()
                .passed
        );
        let any = Some(json!(["Berlin", "Paris"]));
        assert!(c.evaluate(&input("paris", any)).await.unwrap().passed);
        let s = c.evaluate(&input("Rome", exp.clone())).await.unwrap();
        assert!(!s.passed);
        assert!(
            s.explanation.contains("does not contain"),
            "{}",
            s.explanation
        );

        let sw = StringMatch::starts_with("s", Reference::Literal(json!("Yes")));
        assert!(
            sw.evaluate(&input("Yes, it is", None))
                .await
                .unwrap()
                .passed
        );
        assert!(!sw.evaluate(&input("No", None)).await.unwrap().passed);

        let re = StringMatch::regex("r", r"^\d{4}$", false).unwrap();
        assert!(re.evaluate(&input("2024", None)).await.unwrap().passed);
        assert!(!re.evaluate(&input("20245", None)).await.unwrap().passed);
        assert!(StringMatch::regex("r", "(", false).is_err());

        // A regex taken from the case that does not compile is an evaluation error.
        let re = StringMatch::new("r", MatchMode::Regex, Reference::Expected);
        assert!(re.evaluate(&input("x", Some(json!("(")))).await.is_err());
        // No expected value: ERROR, not FAIL.
        assert!(e.evaluate(&input("x", None)).await.is_err());
    }

    #[test]
    fn similarity_metrics() {
        assert_eq!(levenshtein("kitten", "sitting"), 1.0 - 3.0 / 7.0);
        assert_eq!(levenshtein("", ""), 1.0);
        assert_eq!(levenshtein("abc", ""), 0.0);

        assert_eq!(
            rouge_l("the cat sat on the mat", "the cat sat on the mat"),
            1.0
        );
        // LCS("the cat was on the mat", "the cat sat on the mat") = 5 tokens of 6.
        let r = rouge_l("the cat was on the mat", "the cat sat on the mat");
        assert!((r - 5.0 / 6.0).abs() < 1e-12, "{r}");
        assert_eq!(rouge_l("x", "y"), 0.0);

        let refs = vec!["the cat sat on the mat".to_owned()];
        assert!((bleu("the cat sat on the mat", &refs) - 1.0).abs() < 1e-12);
        let partial = bleu("the cat sat on a mat", &refs);
        assert!(partial > 0.3 && partial < 1.0, "{partial}");
        // Shorter candidates pay the brevity penalty.
        assert!(bleu("the cat", &refs) < bleu("the cat sat on the", &refs));
        assert_eq!(bleu("", &refs), 0.0);
    }
}
