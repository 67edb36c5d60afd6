//! Data residency: which regions a tenant's requests may be processed in.
//!
//! Each provider (routing target) has a region; each tenant may have a set of allowed regions.
//! [`ResidencyPolicy::filter`] removes the candidates a tenant may not use, and fails with
//! [`ErrorKind::ResidencyViolation`] (HTTP 403, code `residency_violation`) when none is
//! left: a request is never silently sent elsewhere. The policy fails closed: a provider
//! whose region is unknown is never allowed for a tenant with restrictions.
//!
//! A router applies the filter to its target list (and to every fallback chain) before
//! choosing; the decision can be recorded with [`ResidencyPolicy::decision_detail`].

use std::collections::{BTreeMap, BTreeSet};

use llmops_core::{Error, ErrorKind};
use serde_json::{Value, json};

/// Provider regions and per-tenant allowed regions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResidencyPolicy {
    provider_regions: BTreeMap<String, String>,
    tenant_regions: BTreeMap<String, BTreeSet<String>>,
    default_regions: Option<BTreeSet<String>>,
}

impl ResidencyPolicy {
    /// An empty policy: every tenant may use every provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `provider`'s region (builder style).
    #[must_use]
    pub fn provider(mut self, provider: impl Into<String>, region: impl Into<String>) -> Self {
        self.provider_regions.insert(provider.into(), region.into());
        self
    }

    /// Restricts `tenant` to `regions` (builder style). An empty list allows nothing.
    #[must_use]
    pub fn tenant<I, S>(mut self, tenant: impl Into<String>, regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tenant_regions
            .insert(tenant.into(), regions.into_iter().map(Into::into).collect());
        self
    }

    /// Restricts tenants that have no entry of their own to `regions` (builder style). Without
    /// it they are unrestricted.
    #[must_use]
    pub fn default_regions<I, S>(mut self, regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.default_regions = Some(regions.into_iter().map(Into::into).collect());
        self
    }

    /// The region of `provider`, if declared.
    pub fn region_of(&self, provider: &str) -> Option<&str> {
        self.provider_regions.get(provider).map(String::as_str)
    }

    /// The regions `tenant` may use (`None`: unrestricted).
    pub fn allowed_regions(&self, tenant: &str) -> Option<&BTreeSet<String>> {
        self.tenant_regions
            .get(tenant)
            .or(self.default_regions.as_ref())
    }

    /// Whether `tenant` may send requests to `provider`.
    pub fn allows(&self, tenant: &str, provider: &str) -> bool {
        match self.allowed_regions(tenant) {
            None => true,
            Some(allowed) => self
                .region_of(provider)
                .is_some_and(|r| allowed.contains(r)),
        }
    }

    /// Keeps the candidates `tenant` may use, in order. `provider_of` names each candidate's
    /// provider. Fails with [`ErrorKind::ResidencyViolation`] when none is left (including
    /// when `candidates` is empty).
    pub fn filter<T>(
        &self,
        tenant: &str,
        candidates: impl IntoIterator<Item = T>,
        provider_of: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, Error> {
        let mut rejected = Vec::new();
        let kept: Vec<T> = candidates
            .into_iter()
            .filter(|c| {
                let ok = self.allows(tenant, provider_of(c));
                if !ok {
                    rejected.push(provider_of(c).to_owned());
                }
                ok
            })
            .collect();
        if kept.is_empty() {
            let allowed = self
                .allowed_regions(tenant)
                .map(|s| s.iter().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            return Err(Error::new(
                ErrorKind::ResidencyViolation,
                format!(
                    "no target for tenant {tenant:?} is in an allowed region ({allowed}); rejected: {}",
                    if rejected.is_empty() {
                        "none available".to_owned()
                    } else {
                        rejected.join(", ")
                    }
                ),
            ));
        }
        Ok(kept)
    }

    /// A JSON detail for an audit record of a residency decision.
    pub fn decision_detail(&self, tenant: &str, provider: &str) -> Value {
        json!({
            "tenant": tenant,
            "provider": provider,
            "region": self.region_of(provider),
            "allowed": self.allowed_regions(tenant).map(|s| s.iter().cloned().collect::<Vec<_>>()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ResidencyPolicy {
        ResidencyPolicy::new()
            .provider("eu-primary", "eu")
            .provider("us-backup", "us")
            .provider("eu-backup", "eu")
            .tenant("team-a", ["eu"])
            .tenant("team-none", Vec::<String>::new())
    }

    #[test]
    fn fallback_chain_keeps_only_allowed_regions_in_order() {
        let chain = ["us-backup", "eu-primary", "mystery", "eu-backup"];
        let kept = policy().filter("team-a", chain, |p| p).unwrap();
        assert_eq!(kept, ["eu-primary", "eu-backup"]);
        // Unrestricted tenants keep everything, unknown regions included.
        assert_eq!(policy().filter("team-b", chain, |p| p).unwrap().len(), 4);
    }

    #[test]
    fn no_allowed_target_is_a_hard_error() {
        let err = policy()
            .filter("team-a", ["us-backup", "mystery"], |p| *p)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResidencyViolation);
        assert_eq!(err.http_status(), 403);
        assert_eq!(err.code(), "residency_violation");
        assert!(err.message().contains("us-backup"), "{}", err.message());
        let err = policy()
            .filter("team-none", ["eu-primary"], |p| *p)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResidencyViolation);
        let none: [&str; 0] = [];
        assert!(policy().filter("team-b", none, |p| p).is_err());
    }

    #[test]
    fn unknown_regions_fail_closed_and_defaults_apply() {
        let p = policy().default_regions(["us"]);
        assert!(!p.allows("team-a", "mystery"));
        assert!(p.allows("other", "us-backup"));
        assert!(!p.allows("other", "eu-primary"));
        assert_eq!(p.decision_detail("team-a", "eu-primary")["region"], "eu");
    }
}
