//! Experiment tracking on an MLflow tracking server, over its REST API.
//!
//! [`MlflowClient::log_run`] gets or creates the experiment (named after the suite), creates a
//! run, logs params (target, model, prompt version, dataset digest, repeats, seed, judge
//! models and rubric hashes), metrics (pass rates with their intervals, mean scores, errors,
//! costs, and for a gated run the difference with the baseline, its interval, p-value and
//! the minimum detectable effect) and tags, uploads the run file through the artifacts proxy
//! when the server serves artifacts, and ends the run as `FINISHED`.
//!
//! `runs/log-batch` is chunked within MLflow's limits (≤ 1000 metrics, ≤ 100 params, ≤ 100
//! tags, ≤ 1000 items per request); keys are cut to 250 characters and param/tag values to
//! 250 characters (the documented batch limit; the stricter of the two the docs give).

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{EvalError, Result};
use crate::gate::GateOutcome;
use crate::run::RunFile;

/// A client of an MLflow tracking server.
#[derive(Clone, Debug)]
pub struct MlflowClient {
    base: String,
    http: reqwest::Client,
}

/// Where a logged run lives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedRun {
    /// The experiment id.
    pub experiment_id: String,
    /// The MLflow run id.
    pub run_id: String,
    /// Whether the run file was uploaded as an artifact.
    pub artifact_uploaded: bool,
}

/// What a run becomes in MLflow.
struct Layout {
    params: Vec<(String, String)>,
    metrics: Vec<(String, f64)>,
    tags: Vec<(String, String)>,
}

const MAX_KEY: usize = 250;
const MAX_VALUE: usize = 250;

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// MLflow metric keys allow alphanumerics, `_ - . / space`; replace anything else.
fn metric_key(s: &str) -> String {
    let k: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    cut(&k, MAX_KEY)
}

impl MlflowClient {
    /// A client of the server at `tracking_uri` (e.g. `http://127.0.0.1:5000`).
    pub fn new(tracking_uri: &str) -> Result<Self> {
        let base = tracking_uri.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(EvalError::Tracking(format!(
                "tracking URI must be http(s)://..., got {tracking_uri:?} (file stores are not supported)"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| EvalError::Tracking(e.to_string()))?;
        Ok(Self { base, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.base)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .map_err(|e| EvalError::Tracking(format!("{path}: {e}")))?;
        Self::decode(path, resp).await
    }

    /// GET `api/2.0/mlflow/<path>` with query parameters.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let resp = self
            .http
            .get(self.url(path))
            .query(query)
            .send()
            .await
            .map_err(|e| EvalError::Tracking(format!("{path}: {e}")))?;
        Self::decode(path, resp).await
    }

    async fn decode(path: &str, resp: reqwest::Response) -> Result<Value> {
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| EvalError::Tracking(format!("{path}: {e}")))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let code = v.get("error_code").and_then(Value::as_str).unwrap_or("");
        let msg = v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or(text.trim());
        Err(EvalError::Tracking(format!(
            "{path}: HTTP {} {code}: {}",
            status.as_u16(),
            cut(msg, 300)
        )))
    }

    /// The id of experiment `name`, created if absent.
    pub async fn experiment_id(&self, name: &str) -> Result<String> {
        match self
            .get("experiments/get-by-name", &[("experiment_name", name)])
            .await
        {
            Ok(v) => {
                if let Some(id) = v
                    .pointer("/experiment/experiment_id")
                    .and_then(Value::as_str)
                {
                    return Ok(id.to_owned());
                }
            }
            Err(EvalError::Tracking(m))
                if m.contains("RESOURCE_DOES_NOT_EXIST") || m.contains("HTTP 404") => {}
            Err(e) => return Err(e),
        }
        match self
            .post("experiments/create", &json!({"name": name}))
            .await
        {
            Ok(v) => v
                .get("experiment_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    EvalError::Tracking("experiments/create returned no experiment_id".into())
                }),
            // Created concurrently by another run: read it back.
            Err(EvalError::Tracking(m)) if m.contains("RESOURCE_ALREADY_EXISTS") => {
                let v = self
                    .get("experiments/get-by-name", &[("experiment_name", name)])
                    .await?;
                v.pointer("/experiment/experiment_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| EvalError::Tracking("experiment vanished".into()))
            }
            Err(e) => Err(e),
        }
    }

    /// Logs `run` (with its gate report, if any) as one MLflow run.
    pub async fn log_run(
        &self,
        run: &RunFile,
        extra_tags: &[(String, String)],
    ) -> Result<LoggedRun> {
        let experiment_id = self
            .experiment_id(&format!("llmops-eval/{}", run.suite))
            .await?;
        let created = self
            .post(
                "runs/create",
                &json!({
                    "experiment_id": experiment_id,
                    "run_name": format!("{}-{}", run.suite, &run.run_id[..8.min(run.run_id.len())]),
                    "start_time": run.started_at_ms,
                    "tags": [{"key": "mlflow.source.name", "value": "llmops eval"}],
                }),
            )
            .await?;
        let run_id = created
            .pointer("/run/info/run_id")
            .and_then(Value::as_str)
            .ok_or_else(|| EvalError::Tracking("runs/create returned no run_id".into()))?
            .to_owned();
        let artifact_uri = created
            .pointer("/run/info/artifact_uri")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();

        let Layout {
            params,
            metrics,
            tags,
        } = Self::layout(run, extra_tags);
        let result = async {
            self.log_batch(&run_id, params, metrics, tags, run.finished_at_ms)
                .await?;
            let uploaded = self.upload_run_file(&artifact_uri, run).await;
            Ok::<bool, EvalError>(uploaded)
        }
        .await;
        let status = if result.is_ok() { "FINISHED" } else { "FAILED" };
        self.post(
            "runs/update",
            &json!({"run_id": run_id, "status": status, "end_time": run.finished_at_ms}),
        )
        .await?;
        let artifact_uploaded = result?;
        Ok(LoggedRun {
            experiment_id,
            run_id,
            artifact_uploaded,
        })
    }

    fn layout(run: &RunFile, extra_tags: &[(String, String)]) -> Layout {
        let mut params = vec![
            ("suite".to_owned(), run.suite.clone()),
            ("target".to_owned(), run.target.id.clone()),
            ("model".to_owned(), run.target.model.clone()),
            ("repeats".to_owned(), run.repeats.to_string()),
            ("seed".to_owned(), run.seed.to_string()),
            ("cases".to_owned(), run.summary.cases.to_string()),
            ("llmops_run_id".to_owned(), run.run_id.clone()),
        ];
        if let Some(p) = &run.prompt {
            params.push(("prompt_id".into(), p.id.clone()));
            params.push(("prompt_version".into(), p.version.clone()));
        }
        if let Some(d) = &run.dataset {
            params.push(("dataset".into(), d.path.clone()));
            params.push(("dataset_digest".into(), d.digest.chars().take(16).collect()));
        }
        if let Value::Object(m) = &run.params {
            for (k, v) in m {
                params.push((
                    format!("param.{k}"),
                    match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                ));
            }
        }
        for e in &run.evaluators {
            params.push((format!("evaluator.{}.kind", e.name), e.kind.clone()));
            if let Some(t) = e.threshold {
                params.push((format!("evaluator.{}.threshold", e.name), t.to_string()));
            }
            if let Some(j) = &e.judge {
                params.push((format!("evaluator.{}.judge_model", e.name), j.model.clone()));
                params.push((
                    format!("evaluator.{}.rubric_hash", e.name),
                    j.rubric_hash.clone(),
                ));
            }
        }
        let s = &run.summary;
        let mut metrics = vec![
            ("samples".to_owned(), s.samples as f64),
            ("target_errors".to_owned(), s.target_errors as f64),
            ("target_cost_usd".to_owned(), s.target_cost_usd),
            ("judge_cost_usd".to_owned(), s.judge_cost_usd),
            ("input_tokens".to_owned(), s.input_tokens as f64),
            ("output_tokens".to_owned(), s.output_tokens as f64),
            ("duration_s".to_owned(), s.duration_ms as f64 / 1000.0),
        ];
        for m in &s.metrics {
            metrics.push((format!("{}.pass_rate", m.name), m.pass_rate));
            metrics.push((format!("{}.pass_rate_ci_low", m.name), m.pass_rate_ci.low));
            metrics.push((format!("{}.pass_rate_ci_high", m.name), m.pass_rate_ci.high));
            metrics.push((format!("{}.mean_score", m.name), m.mean_score));
            metrics.push((format!("{}.errors", m.name), m.errors as f64));
        }
        let mut tags = vec![(
            "mlflow.runName".to_owned(),
            format!("{}-{}", run.suite, &run.run_id[..8.min(run.run_id.len())]),
        )];
        if let Some(g) = &run.gate {
            tags.push((
                "gate".into(),
                match g.outcome {
                    GateOutcome::Pass => "pass",
                    GateOutcome::Fail => "fail",
                    GateOutcome::Inconclusive => "inconclusive",
                }
                .into(),
            ));
            if let Some(b) = &g.baseline_run_id {
                tags.push(("baseline_run_id".into(), b.clone()));
            }
            for mg in &g.metrics {
                if let Some(c) = &mg.comparison {
                    metrics.push((format!("{}.delta", mg.metric), c.delta));
                    metrics.push((format!("{}.delta_ci_low", mg.metric), c.ci.low));
                    metrics.push((format!("{}.delta_ci_high", mg.metric), c.ci.high));
                    metrics.push((format!("{}.p_value", mg.metric), c.p_adjusted));
                    metrics.push((format!("{}.mde", mg.metric), c.mde));
                }
            }
        }
        tags.extend(extra_tags.iter().cloned());
        let params = params
            .into_iter()
            .map(|(k, v)| (cut(&k, MAX_KEY), cut(&v, MAX_VALUE)))
            .collect();
        let metrics = metrics
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (metric_key(&k), v))
            .collect();
        let tags = tags
            .into_iter()
            .map(|(k, v)| (cut(&k, MAX_KEY), cut(&v, MAX_VALUE)))
            .collect();
        Layout {
            params,
            metrics,
            tags,
        }
    }

    async fn log_batch(
        &self,
        run_id: &str,
        params: Vec<(String, String)>,
        metrics: Vec<(String, f64)>,
        tags: Vec<(String, String)>,
        timestamp: u64,
    ) -> Result<()> {
        for chunk in params.chunks(100) {
            let params: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            self.post(
                "runs/log-batch",
                &json!({"run_id": run_id, "params": params}),
            )
            .await?;
        }
        for chunk in tags.chunks(100) {
            let tags: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            self.post("runs/log-batch", &json!({"run_id": run_id, "tags": tags}))
                .await?;
        }
        for chunk in metrics.chunks(1000) {
            let metrics: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v, "timestamp": timestamp, "step": 0}))
                .collect();
            self.post(
                "runs/log-batch",
                &json!({"run_id": run_id, "metrics": metrics}),
            )
            .await?;
        }
        Ok(())
    }

    /// Uploads the run file through the artifacts proxy (`mlflow-artifacts:/` URIs only).
    /// Returns whether it was uploaded; a server without proxied artifacts is not an error.
    async fn upload_run_file(&self, artifact_uri: &str, run: &RunFile) -> bool {
        let Some(path) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            tracing::info!(
                artifact_uri,
                "MLflow run has no proxied artifact store: run file not uploaded"
            );
            return false;
        };
        let path = path.trim_start_matches('/');
        let Ok(body) = serde_json::to_vec_pretty(run) else {
            return false;
        };
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{path}/run.json",
            self.base
        );
        match self
            .http
            .put(url)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "MLflow artifact upload refused"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "MLflow artifact upload failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_fit_mlflow_limits() {
        assert_eq!(metric_key("has answer:pass_rate"), "has answer_pass_rate");
        let long = "é".repeat(300);
        assert!(cut(&long, 250).len() <= 250);
        assert!(MlflowClient::new("file:///tmp/mlruns").is_err());
    }
}
