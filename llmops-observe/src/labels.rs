//! Bounded label values: a cardinality cap per label key.
//!
//! Every per-request metric carries model, provider, tenant and prompt template/version
//! labels. Those come from clients and configuration, so a misbehaving client could create a
//! time series per request. A [`LabelLimiter`] admits the first `cap` distinct values of a
//! key and folds every later one into [`OTHER`]. Admission is first-come: a value admitted
//! stays admitted for the life of the process, so series never flip between a value and
//! `other`.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

/// The value that values past the cap fold into.
pub const OTHER: &str = "other";

/// Caps on distinct label values, per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LabelCaps {
    /// Distinct `gen_ai.request.model` values.
    pub model: usize,
    /// Distinct `gen_ai.provider.name` values.
    pub provider: usize,
    /// Distinct `llmops.tenant` values.
    pub tenant: usize,
    /// Distinct `llmops.prompt.id` values.
    pub prompt_id: usize,
    /// Distinct `llmops.prompt.version` values.
    pub prompt_version: usize,
}

impl Default for LabelCaps {
    fn default() -> Self {
        Self {
            model: 64,
            provider: 32,
            tenant: 256,
            prompt_id: 128,
            prompt_version: 256,
        }
    }
}

impl LabelCaps {
    /// The same cap for every key.
    pub fn uniform(cap: usize) -> Self {
        Self {
            model: cap,
            provider: cap,
            tenant: cap,
            prompt_id: cap,
            prompt_version: cap,
        }
    }
    /// Sets the model cap (builder style).
    #[must_use]
    pub fn with_model(mut self, cap: usize) -> Self {
        self.model = cap;
        self
    }

    /// Sets the provider cap (builder style).
    #[must_use]
    pub fn with_provider(mut self, cap: usize) -> Self {
        self.provider = cap;
        self
    }

    /// Sets the tenant cap (builder style).
    #[must_use]
    pub fn with_tenant(mut self, cap: usize) -> Self {
        self.tenant = cap;
        self
    }

    /// Sets the prompt-id and prompt-version caps (builder style).
    #[must_use]
    pub fn with_prompt(mut self, ids: usize, versions: usize) -> Self {
        self.prompt_id = ids;
        self.prompt_version = versions;
        self
    }
}

/// Admits at most `cap` distinct values; later values become [`OTHER`].
#[derive(Debug)]
pub struct LabelLimiter {
    cap: usize,
    seen: RwLock<HashSet<Arc<str>>>,
    other: Arc<str>,
}

impl LabelLimiter {
    /// A limiter admitting `cap` distinct values.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: RwLock::new(HashSet::new()),
            other: Arc::from(OTHER),
        }
    }

    /// The value to use as a label: `value` itself when admitted, [`OTHER`] otherwise.
    pub fn admit(&self, value: &str) -> Arc<str> {
        {
            let seen = self.seen.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(v) = seen.get(value) {
                return v.clone();
            }
            if seen.len() >= self.cap {
                return self.other.clone();
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = seen.get(value) {
            return v.clone();
        }
        if seen.len() >= self.cap {
            return self.other.clone();
        }
        let v: Arc<str> = Arc::from(value);
        seen.insert(v.clone());
        v
    }

    /// How many distinct values were admitted.
    pub fn admitted(&self) -> usize {
        self.seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One limiter per capped key.
#[derive(Debug)]
pub(crate) struct Limiters {
    pub(crate) model: LabelLimiter,
    pub(crate) provider: LabelLimiter,
    pub(crate) tenant: LabelLimiter,
    pub(crate) prompt_id: LabelLimiter,
    pub(crate) prompt_version: LabelLimiter,
}

impl Limiters {
    pub(crate) fn new(caps: LabelCaps) -> Self {
        Self {
            model: LabelLimiter::new(caps.model),
            provider: LabelLimiter::new(caps.provider),
            tenant: LabelLimiter::new(caps.tenant),
            prompt_id: LabelLimiter::new(caps.prompt_id),
            prompt_version: LabelLimiter::new(caps.prompt_version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_fold_into_other() {
        let l = LabelLimiter::new(2);
        assert_eq!(&*l.admit("a"), "a");
        assert_eq!(&*l.admit("b"), "b");
        assert_eq!(&*l.admit("c"), OTHER);
        assert_eq!(&*l.admit("a"), "a", "admitted values stay admitted");
        assert_eq!(l.admitted(), 2);
    }

    #[test]
    fn a_zero_cap_folds_everything() {
        let l = LabelLimiter::new(0);
        assert_eq!(&*l.admit("a"), OTHER);
    }
}
