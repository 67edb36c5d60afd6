//! The Redis budget backend: one set of limits for every replica sharing a Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use llmops_core::{Amount, Budget, BudgetScope, Error, ErrorKind, Reservation, Result, Usd};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Limit, Limits, OnBackendError, counters_for, dims, exceeded, now_ms, validate_limits};
use crate::error::CostError;

/// Checks every counter, then charges every counter — atomically, as one script.
///
/// KEYS: per counter, its spent hash and its reservations hash.
/// ARGV: now_ms, reservation id, lease expiry ms, hash TTL ms, amount (usd, tokens, requests),
/// then per counter: current bucket, buckets in window, caps (usd, tokens, requests; -1 for
/// none). Spent hash fields are `<bucket>:<dim>`; reservation fields map an id to
/// `"<usd> <tokens> <requests> <expiry_ms>"`. Returns `{0}` or the first counter without room:
/// `{counter, dim, spent, reserved}` (1-based counter).
const RESERVE: &str = r"
local now = tonumber(ARGV[1])
local amt = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local n = #KEYS / 2
for i = 1, n do
  local base = 7 + (i - 1) * 5
  local cur = tonumber(ARGV[base + 1])
  local nb = tonumber(ARGV[base + 2])
  local caps = {tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])}
  local spent = {0, 0, 0}
  local kv = redis.call('HGETALL', KEYS[2 * i - 1])
  for j = 1, #kv, 2 do
    local f = kv[j]
    local sep = string.find(f, ':', 1, true)
    local b = tonumber(string.sub(f, 1, sep - 1))
    local d = tonumber(string.sub(f, sep + 1))
    if b <= cur - nb then
      redis.call('HDEL', KEYS[2 * i - 1], f)
    else
      spent[d + 1] = spent[d + 1] + tonumber(kv[j + 1])
    end
  end
  local reserved = {0, 0, 0}
  local rv = redis.call('HGETALL', KEYS[2 * i])
  for j = 1, #rv, 2 do
    local a = {}
    for x in string.gmatch(rv[j + 1], '%S+') do a[#a + 1] = tonumber(x) end
    if a[4] <= now then
      redis.call('HDEL', KEYS[2 * i], rv[j])
    else
      for d = 1, 3 do reserved[d] = reserved[d] + a[d] end
    end
  end
  for d = 1, 3 do
    if caps[d] >= 0 and spent[d] + reserved[d] + amt[d] > caps[d] then
      return {i, d - 1, spent[d], reserved[d]}
    end
  end
end
local val = ARGV[5] .. ' ' .. ARGV[6] .. ' ' .. ARGV[7] .. ' ' .. ARGV[3]
for i = 1, n do
  redis.call('HSET', KEYS[2 * i], ARGV[2], val)
  redis.call('PEXPIRE', KEYS[2 * i], ARGV[4])
end
return {0}
";

/// Removes a reservation and, for a commit, adds the actual amount to the current bucket.
///
/// KEYS: per counter, spent hash and reservations hash. ARGV: id, actual (usd, tokens,
/// requests; all zero for a release), commit flag, then per counter: current bucket, spent
/// TTL ms. Returns how many counters still held the reservation.
const SETTLE: &str = r"
local n = #KEYS / 2
local held = 0
for i = 1, n do
  held = held + redis.call('HDEL', KEYS[2 * i], ARGV[1])
  if ARGV[5] == '1' then
    local cur = ARGV[5 + 2 * i - 1]
    for d = 0, 2 do
      local v = tonumber(ARGV[2 + d])
      if v ~= 0 then redis.call('HINCRBY', KEYS[2 * i - 1], cur .. ':' .. d, v) end
    end
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[5 + 2 * i])
  end
end
return held
";

/// Reads a counter: `{spent usd, reserved usd}` in the window.
const PEEK: &str = r"
local now = tonumber(ARGV[1])
local cur = tonumber(ARGV[2])
local nb = tonumber(ARGV[3])
local spent = 0
local kv = redis.call('HGETALL', KEYS[1])
for j = 1, #kv, 2 do
  local f = kv[j]
  local sep = string.find(f, ':', 1, true)
  local b = tonumber(string.sub(f, 1, sep - 1))
  if b > cur - nb and string.sub(f, sep + 1) == '0' then spent = spent + tonumber(kv[j + 1]) end
end
local reserved = 0
local rv = redis.call('HGETALL', KEYS[2])
for j = 1, #rv, 2 do
  local a = {}
  for x in string.gmatch(rv[j + 1], '%S+') do a[#a + 1] = tonumber(x) end
  if a[4] > now then reserved = reserved + a[1] end
end
return {spent, reserved}
";

/// Reservation ids of requests let through unchecked while Redis was unreachable.
const UNCHECKED: &str = "unchecked:";

/// Budgets and rate limits on Redis, shared by every gateway replica using the same Redis and
/// namespace.
///
/// Each check-and-charge is one Lua script over all the counters a request touches, so
/// replicas never overshoot a cap together. Keys are `{<namespace>}:b:<limit>:<scope>:s`
/// (spent per bucket) and `…:r` (reservations); the namespace is a hash tag, so all keys of a
/// namespace live in one Redis Cluster slot. Spent hashes expire after their window;
/// reservations are leases (`reservation_ttl`, 15 minutes by default) so that a replica that
/// dies mid-request does not hold budget forever.
///
/// When Redis cannot be reached, a request touching only fail-open limits goes through
/// unchecked (its spend is still recorded if Redis is back by the time it ends); otherwise it
/// is refused with HTTP 503 and code `budget_unavailable`. Both are logged and counted in the
/// `llmops_budget_backend_errors_total{backend="redis",decision}` metric.
#[derive(Clone)]
pub struct RedisBudget {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    namespace: String,
    limits: Limits,
    reservation_ttl: Duration,
    reserve: Script,
    settle: Script,
    peek: Script,
}

impl fmt::Debug for RedisBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBudget")
            .field("namespace", &self.inner.namespace)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

/// Builds a [`RedisBudget`].
#[derive(Debug)]
#[must_use]
pub struct RedisBudgetBuilder {
    url: String,
    namespace: String,
    limits: Vec<Limit>,
    reservation_ttl: Duration,
    timeout: Duration,
}

impl RedisBudgetBuilder {
    /// Sets the key namespace (default `llmops`).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Adds a limit.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// Sets all limits.
    pub fn limits(mut self, limits: Vec<Limit>) -> Self {
        self.limits = limits;
        self
    }

    /// How long an unsettled reservation holds budget (default 15 minutes).
    pub fn reservation_ttl(mut self, ttl: Duration) -> Self {
        self.reservation_ttl = ttl;
        self
    }

    /// Connection and response timeout of Redis calls (default 1 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Connects. Fails if Redis cannot be reached now; afterwards the connection reconnects
    /// by itself.
    pub async fn connect(self) -> std::result::Result<RedisBudget, CostError> {
        let limits = validate_limits(self.limits)?;
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| CostError::Config(format!("invalid redis_url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| CostError::Backend {
                backend: "redis",
                message: format!("{}: {e}", self.url),
            })?;
        Ok(RedisBudget {
            inner: Arc::new(Inner {
                conn,
                namespace: self.namespace,
                limits,
                reservation_ttl: self.reservation_ttl,
                reserve: Script::new(RESERVE),
                settle: Script::new(SETTLE),
                peek: Script::new(PEEK),
            }),
        })
    }
}

impl RedisBudget {
    /// A builder for a budget on the Redis at `url`.
    pub fn builder(url: impl Into<String>) -> RedisBudgetBuilder {
        RedisBudgetBuilder {
            url: url.into(),
            namespace: "llmops".into(),
            limits: Vec::new(),
            reservation_ttl: Duration::from_secs(900),
            timeout: Duration::from_secs(1),
        }
    }

    /// The limits this backend enforces.
    pub fn limits(&self) -> &[Limit] {
        &self.inner.limits
    }

    fn keys(&self, limit: &Limit, scope: &BudgetScope) -> (String, String) {
        let base = format!("{{{}}}:b:{}:{}", self.inner.namespace, limit.id, scope.0);
        (format!("{base}:s"), format!("{base}:r"))
    }

    /// Committed and reserved USD in a scope's window for the limit `limit_id` (for tests and
    /// dashboards).
    pub async fn usage(&self, limit_id: &str, scope: &BudgetScope) -> Result<Option<(Usd, Usd)>> {
        let Some(limit) = self.inner.limits.iter().find(|l| l.id == limit_id) else {
            return Ok(None);
        };
        let (s, r) = self.keys(limit, scope);
        let now = now_ms();
        let (b, n) = limit.window.bucket(now);
        let mut conn = self.inner.conn.clone();
        let (spent, reserved): (i64, i64) = self
            .inner
            .peek
            .key(s)
            .key(r)
            .arg(now)
            .arg(b)
            .arg(n)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(Some((Usd::from_nanos(spent), Usd::from_nanos(reserved))))
    }

    fn backend_failure(
        &self,
        touched: &[(usize, &BudgetScope)],
        err: &redis::RedisError,
        op: &str,
    ) -> Option<Error> {
        let open = touched
            .iter()
            .all(|(i, _)| self.inner.limits[*i].on_backend_error == OnBackendError::FailOpen);
        let decision = if open { "fail_open" } else { "fail_closed" };
        metrics::counter!("llmops_budget_backend_errors_total", "backend" => "redis", "decision" => decision)
            .increment(1);
        tracing::warn!(error = %err, op, decision, "budget store (redis) unreachable");
        (!open).then(|| {
            Error::new(
                ErrorKind::Overloaded,
                format!(
                    "the budget store is unreachable and the budget fails closed: {err}; retry \
                     later"
                ),
            )
            .with_code("budget_unavailable")
        })
    }

    async fn settle(&self, r: &Reservation, actual: Option<Amount>) -> Result<()> {
        let touched = counters_for(&self.inner.limits, &r.scopes);
        if touched.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let a = actual.map(|a| dims(&a)).unwrap_or([0; 3]);
        let mut inv = self.inner.settle.prepare_invoke();
        for (i, scope) in &touched {
            let (s, rk) = self.keys(&self.inner.limits[*i], scope);
            inv.key(s).key(rk);
        }
        inv.arg(&r.id)
            .arg(a[0])
            .arg(a[1])
            .arg(a[2])
            .arg(u8::from(actual.is_some()));
        for (i, _) in &touched {
            let w = self.inner.limits[*i].window;
            inv.arg(w.bucket(now).0)
                .arg(i64::try_from(w.ttl().as_millis()).unwrap_or(i64::MAX));
        }
        let mut conn = self.inner.conn.clone();
        match inv.invoke_async::<i64>(&mut conn).await {
            Ok(held) => {
                if held == 0 && !r.id.starts_with(UNCHECKED) {
                    tracing::warn!(
                        reservation = %r.id,
                        "budget reservation had expired or was already settled"
                    );
                }
                Ok(())
            }
            Err(e) => {
                metrics::counter!("llmops_budget_backend_errors_total", "backend" => "redis", "decision" => "settle_failed")
                    .increment(1);
                tracing::warn!(error = %e, reservation = %r.id, "budget settlement failed: the reservation expires with its lease");
                Err(redis_error(e))
            }
        }
    }
}

fn redis_error(e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Overloaded, format!("budget store (redis): {e}"))
        .with_code("budget_unavailable")
        .with_source(e)
}

#[async_trait]
impl Budget for RedisBudget {
    /// Runs in a task of its own: if the caller is cancelled while the script is in flight,
    /// a granted reservation is released instead of leaking until its lease expires.
    async fn reserve(&self, scopes: &[BudgetScope], amount: Amount) -> Result<Reservation> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let scopes = scopes.to_vec();
        tokio::spawn(async move {
            let result = me.reserve_now(&scopes, amount).await;
            if let Err(Ok(granted)) = tx.send(result) {
                // Nobody is waiting any more.
                let _ = me.settle(&granted, None).await;
            }
        });
        rx.await
            .map_err(|_| Error::internal("budget reservation task failed"))?
    }

    /// Runs in a task of its own, so that a cancelled caller cannot interrupt it half-way.
    async fn commit(&self, reservation: Reservation, actual: Amount) -> Result<()> {
        let me = self.clone();
        tokio::spawn(async move { me.settle(&reservation, Some(actual)).await })
            .await
            .map_err(|_| Error::internal("budget commit task failed"))?
    }

    /// Runs in a task of its own, so that a cancelled caller cannot interrupt it half-way.
    async fn release(&self, reservation: Reservation) -> Result<()> {
        let me = self.clone();
        tokio::spawn(async move { me.settle(&reservation, None).await })
            .await
            .map_err(|_| Error::internal("budget release task failed"))?
    }

    async fn remaining(&self, scope: &BudgetScope) -> Result<Option<Usd>> {
        let mut best: Option<i64> = None;
        for l in self.inner.limits.iter() {
            let (Some(cap), true) = (l.usd, l.pattern.matches(scope)) else {
                continue;
            };
            if let Some((spent, reserved)) = self.usage(&l.id, scope).await? {
                let left = cap.nanos() - spent.nanos() - reserved.nanos();
                best = Some(best.map_or(left, |x| x.min(left)));
            }
        }
        Ok(best.map(|n| Usd::from_nanos(n.max(0))))
    }
}

impl RedisBudget {
    async fn reserve_now(&self, scopes: &[BudgetScope], amount: Amount) -> Result<Reservation> {
        let limits = &self.inner.limits;
        let touched = counters_for(limits, scopes);
        let id = llmops_core::id::uuid_v7_string();
        if touched.is_empty() {
            return Ok(Reservation::new(id, scopes.to_vec(), amount));
        }
        let now = now_ms();
        let lease = i64::try_from(self.inner.reservation_ttl.as_millis()).unwrap_or(i64::MAX);
        let want = dims(&amount);
        let mut inv = self.inner.reserve.prepare_invoke();
        for (i, scope) in &touched {
            let (s, r) = self.keys(&limits[*i], scope);
            inv.key(s).key(r);
        }
        inv.arg(now)
            .arg(&id)
            .arg(now.saturating_add(lease))
            .arg(lease.saturating_mul(2));
        inv.arg(want[0]).arg(want[1]).arg(want[2]);
        for (i, _) in &touched {
            let l = &limits[*i];
            let (b, n) = l.window.bucket(now);
            let caps = l.caps();
            inv.arg(b).arg(n);
            for c in caps {
                inv.arg(c.unwrap_or(-1));
            }
        }
        let mut conn = self.inner.conn.clone();
        match inv.invoke_async::<Vec<i64>>(&mut conn).await {
            Ok(v) if v.first() == Some(&0) => Ok(Reservation::new(id, scopes.to_vec(), amount)),
            Ok(v) if v.len() == 4 => {
                let idx = usize::try_from(v[0] - 1).unwrap_or(0);
                let dim = usize::try_from(v[1]).unwrap_or(0).min(2);
                let (li, scope) = touched.get(idx).copied().unwrap_or(touched[0]);
                Err(exceeded(
                    &limits[li],
                    scope,
                    dim,
                    v[2],
                    v[3],
                    want[dim],
                    now,
                ))
            }
            Ok(v) => Err(Error::internal(format!(
                "unexpected budget script answer {v:?}"
            ))),
            Err(e) => match self.backend_failure(&touched, &e, "reserve") {
                Some(err) => Err(err.with_source(e)),
                None => Ok(Reservation::new(
                    format!("{UNCHECKED}{id}"),
                    scopes.to_vec(),
                    amount,
                )),
            },
        }
    }
}
