//! The runners this gateway sends inference to, over gRPC, and what it knows of each.
//!
//! Members come from the configured list and, when set, a DNS name re-resolved periodically
//! (a Kubernetes headless Service). A background task polls every member's status (loaded
//! models, queues, memory) into a routing view; [`routing::order`] turns that view into the
//! order a request tries runners in. A unary call that could not reach its runner is retried
//! once on the next runner; a call lost with its runner (sent, then the runner died) is not
//! replayed, and the versions in flight there are blamed ([`blame`], [`containment`]); a
//! runner whose calls keep failing has its circuit opened for a while, and a successful poll
//! after that closes it again.

pub mod blame;
mod config;
mod containment;
mod generation;
mod member;
pub mod routing;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use proto::v1::runner_client::RunnerClient;
use proto::v1::{
    ClassifyRequest, ClassifyResponse, EmbedRequest, EmbedResponse, GenerateRequest, LoadRequest, ModelSpec,
    PinRequest, StatusResponse, UnloadRequest,
};
use tonic::transport::Channel;

use crate::error::{ApiError, ErrorCode};

pub use config::{DEFAULT_SERVER_NAME, RoutingConfig, RunnerTlsConfig, client_tls_config};
pub use generation::Generation;
pub use member::AddressError;
use member::{LoadedCopy, Member, Outstanding, STATUS_TIMEOUT, is_connection_failure, status};

/// The runners and the gateway's view of them. Cheap to clone.
#[derive(Clone)]
pub struct RunnerPool {
    inner: Arc<Inner>,
}

struct Inner {
    config: RoutingConfig,
    /// Mutual TLS towards every runner; None: plaintext (`[gateway.runner_tls] insecure`).
    tls: Option<tonic::transport::ClientTlsConfig>,
    configured: Vec<String>,
    members: RwLock<Arc<Vec<Arc<Member>>>>,
    /// When each version last had a copy at `hot_queue`.
    last_hot: Mutex<HashMap<String, Instant>>,
    /// Who is blamed when a runner dies with calls in flight.
    containment: containment::Containment,
}

/// The memory a version's model is expected to take: its weights' size, as runners
/// estimate it before a load.
fn cost(spec: &ModelSpec) -> u64 {
    spec.files.iter().filter(|f| f.path.ends_with(".safetensors") || f.path.ends_with(".gguf")).map(|f| f.size).sum()
}

impl RunnerPool {
    /// Connections are made lazily, so a gateway starts before its runners.
    pub fn new(
        addresses: &[String],
        config: RoutingConfig,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Self, AddressError> {
        let members =
            addresses.iter().map(|a| Member::new(a, tls.as_ref()).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                tls,
                configured: addresses.to_vec(),
                members: RwLock::new(Arc::new(members)),
                last_hot: Mutex::default(),
                containment: containment::Containment::default(),
            }),
        })
    }

    /// The largest memory budget a runner has reported, if any has: a version that needs
    /// more cannot be served anywhere.
    pub fn largest_budget(&self) -> Option<u64> {
        self.members().iter().map(|m| m.view().memory_budget).filter(|b| *b > 0).max()
    }

    /// Records the strikes and quarantines of runners' deaths in `registry` (without one,
    /// deaths are still judged, logged and counted, and lost calls still not replayed).
    pub fn contain_with(&self, registry: registry::Registry) {
        self.inner.containment.attach(registry);
    }

    fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.inner.members.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Polls every runner's status and re-resolves the DNS name, until the task is dropped.
    pub async fn watch(self) {
        let config = &self.inner.config;
        let mut poll = tokio::time::interval(Duration::from_millis(config.poll_ms.max(10)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let dns_every = Duration::from_secs(config.dns_refresh_secs.max(1));
        let mut resolved_at: Option<Instant> = None;
        loop {
            poll.tick().await;
            if let Some(name) = &config.dns
                && resolved_at.is_none_or(|t| t.elapsed() >= dns_every)
            {
                resolved_at = Some(Instant::now());
                self.resolve(name).await;
            }
            self.poll().await;
            self.release_idle_copies().await;
        }
    }

    /// Makes the members the configured list plus every address `name` resolves to now;
    /// members that stay keep their view. A failed lookup changes nothing.
    async fn resolve(&self, name: &str) {
        let found = match tokio::net::lookup_host(name).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(runner.dns = %name, error = %e, "resolving runners failed; keeping the ones known");
                return;
            }
        };
        let mut wanted: BTreeSet<String> = self.inner.configured.iter().cloned().collect();
        wanted.extend(found.map(|addr| format!("http://{addr}")));
        let current = self.members();
        if current.iter().map(|m| &m.address).eq(wanted.iter()) {
            return;
        }
        let mut next = Vec::with_capacity(wanted.len());
        for address in &wanted {
            match current.iter().find(|m| &m.address == address) {
                Some(member) => next.push(member.clone()),
                None => match Member::new(address, self.inner.tls.as_ref()) {
                    Ok(member) => next.push(Arc::new(member)),
                    Err(e) => tracing::warn!(runner.address = %address, error = %e, "skipping a resolved runner"),
                },
            }
        }
        tracing::info!(runner.dns = %name, runners = next.len(), "runner set changed");
        *self.inner.members.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
    }

    /// Asks every member for its status and updates its view.
    async fn poll(&self) {
        let members = self.members();
        let answers = futures::future::join_all(members.iter().map(|m| status(m))).await;
        for (member, answer) in members.iter().zip(answers) {
            self.observe(member, answer);
        }
    }

    /// Takes in one status poll's answer: a good one makes the runner usable again (and
    /// closes its circuit once its time is up), a failed one takes it out.
    fn observe(&self, member: &Member, answer: Result<StatusResponse, tonic::Status>) {
        let now = Instant::now();
        let mut view = member.view();
        match answer {
            Ok(s) => {
                if view.healthy == Some(false) {
                    tracing::info!(runner.address = %member.address, "runner reachable again");
                }
                view.healthy = Some(true);
                if view.open_until.is_some_and(|t| now >= t) {
                    tracing::info!(runner.address = %member.address, "runner's circuit closed after a good probe");
                    view.open_until = None;
                    view.failures = 0;
                }
                view.memory_used = s.memory_used_bytes;
                view.memory_budget = s.memory_budget_bytes;
                view.models = s
                    .loaded
                    .iter()
                    .map(|m| (m.version_id.clone(), LoadedCopy { in_flight: m.in_flight, pinned: m.pinned }))
                    .collect();
                let busy = view.models.iter().filter(|(_, c)| c.in_flight > 0).map(|(v, _)| v.clone()).collect();
                self.inner.containment.saw_busy(&member.address, busy);
                let mut last_hot = self.inner.last_hot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (version, copy) in &view.models {
                    if copy.in_flight >= self.inner.config.hot_queue {
                        last_hot.insert(version.clone(), now);
                    }
                }
            }
            Err(e) => {
                if view.healthy != Some(false) {
                    tracing::warn!(runner.address = %member.address, error = %e, "runner does not answer its status");
                }
                view.healthy = Some(false);
                view.models.clear();
            }
        }
        let up = view.healthy == Some(true) && view.open_until.is_none();
        crate::metrics::RUNNER_UP.with_label_values(&[member.address.as_str()]).set(i64::from(up));
    }

    /// A version loaded on several runners whose copies have all been below `hot_queue` for
    /// `replica_idle_secs` keeps one copy: the first in rendezvous order among them. Pinned
    /// copies stay; a copy busy at the moment refuses to unload and is tried again later.
    async fn release_idle_copies(&self) {
        let members = self.members();
        let mut holders: HashMap<String, Vec<(&Arc<Member>, LoadedCopy)>> = HashMap::new();
        for member in members.iter() {
            for (version, copy) in &member.view().models {
                holders.entry(version.clone()).or_default().push((member, *copy));
            }
        }
        let idle_for = Duration::from_secs(self.inner.config.replica_idle_secs);
        let extra: Vec<(String, Arc<Member>)> = {
            let last_hot = self.inner.last_hot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            holders
                .into_iter()
                .filter(|(version, copies)| {
                    copies.len() > 1 && last_hot.get(version).is_none_or(|t| t.elapsed() >= idle_for)
                })
                .flat_map(|(version, mut copies)| {
                    copies.sort_by_key(|(m, _)| std::cmp::Reverse(routing::rendezvous(&version, &m.address)));
                    copies
                        .into_iter()
                        .skip(1)
                        .filter(|(_, copy)| !copy.pinned)
                        .map(move |(m, _)| (version.clone(), m.clone()))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for (version, member) in extra {
            let request = crate::trace::grpc_request(UnloadRequest { version_id: version.clone() }, STATUS_TIMEOUT);
            if let Ok(answer) = member.client().unload(request).await
                && answer.into_inner().unloaded
            {
                tracing::info!(runner.address = %member.address, model.version_id = %version, "extra copy released");
                member.view().models.remove(&version);
            }
        }
    }

    /// The members in the order a request for `spec` tries them.
    fn route(&self, spec: &ModelSpec) -> Vec<Arc<Member>> {
        let members = self.members();
        let now = Instant::now();
        let views: Vec<(Option<LoadedCopy>, bool, u64, u64)> = members
            .iter()
            .map(|m| {
                let view = m.view();
                let usable = view.healthy != Some(false) && view.open_until.is_none_or(|t| now >= t);
                let room = view.memory_budget.saturating_sub(view.memory_used);
                let room = if view.healthy.is_none() { u64::MAX } else { room };
                let mine = m.outstanding().get(&spec.version_id).copied().unwrap_or(0);
                (view.models.get(&spec.version_id).copied(), usable, room, mine)
            })
            .collect();
        let candidates: Vec<routing::Candidate<'_>> = members
            .iter()
            .zip(&views)
            .map(|(m, (copy, usable, room, mine))| routing::Candidate {
                address: &m.address,
                usable: *usable,
                queued: copy.map(|c| c.in_flight + mine),
                room: *room,
            })
            .collect();
        routing::order(&spec.version_id, cost(spec), self.inner.config.hot_queue, &candidates)
            .into_iter()
            .map(|i| members[i].clone())
            .collect()
    }

    fn record(&self, member: &Member, outcome: Result<(), &tonic::Status>) {
        let mut view = member.view();
        match outcome {
            Ok(()) => view.failures = 0,
            Err(status) => {
                // Calls in flight when a runner dies all fail together: one failure. Polls
                // bring it back, and a runner that keeps failing after that opens its circuit.
                if view.healthy == Some(false) {
                    return;
                }
                if is_connection_failure(status) {
                    view.healthy = Some(false);
                    view.models.clear();
                }
                view.failures += 1;
                if view.failures >= self.inner.config.breaker_failures && view.open_until.is_none() {
                    tracing::warn!(runner.address = %member.address, failures = view.failures, "runner keeps failing; its circuit opens");
                    view.open_until = Some(Instant::now() + Duration::from_millis(self.inner.config.breaker_open_ms));
                }
            }
        }
    }

    pub async fn embed(&self, spec: ModelSpec, inputs: Vec<String>) -> Result<EmbedResponse, ApiError> {
        let timeout = Duration::from_millis(self.inner.config.embed_timeout_ms);
        let request = EmbedRequest { model: Some(spec), inputs };
        let spec = request.model.as_ref().expect("set just above; this is a bug");
        self.call(spec, |mut client| {
            let call = crate::trace::grpc_request(request.clone(), timeout);
            async move { client.embed(call).await }
        })
        .await
        .map(|(answer, _)| answer)
    }

    pub async fn classify(&self, spec: ModelSpec, inputs: Vec<String>) -> Result<ClassifyResponse, ApiError> {
        let timeout = Duration::from_millis(self.inner.config.embed_timeout_ms);
        let request = ClassifyRequest { model: Some(spec), inputs };
        let spec = request.model.as_ref().expect("set just above; this is a bug");
        self.call(spec, |mut client| {
            let call = crate::trace::grpc_request(request.clone(), timeout);
            async move { client.classify(call).await }
        })
        .await
        .map(|(answer, _)| answer)
    }

    /// Starts a generation on the version's runner; the chunks follow on the stream, which
    /// ends at `generate_timeout_ms` from now, and dropping it stops the generation. Only the
    /// start is retried elsewhere.
    pub async fn generate(&self, request: GenerateRequest) -> Result<Generation, ApiError> {
        let timeout = Duration::from_millis(self.inner.config.generate_timeout_ms);
        let Some(spec) = request.model.as_ref() else {
            return Err(ApiError::invalid("no model given"));
        };
        self.call(spec, |mut client| {
            let call = crate::trace::grpc_request(request.clone(), timeout);
            async move { client.generate(call).await }
        })
        .await
        .map(|(answer, member)| Generation::new(answer, timeout, self.clone(), member, spec.version_id.clone()))
    }

    /// Makes a call on the runner that routing puts first, and once more on the next one if
    /// the call could not reach the first. A call lost with its runner (sent, unanswered, the
    /// connection gone) is not repeated: it may be what killed the runner, and repeating it
    /// could kill the next one. Its death is judged instead ([`containment`]). Answers which
    /// runner answered.
    async fn call<T, F, Fut>(&self, spec: &ModelSpec, call: F) -> Result<(T, Arc<Member>), ApiError>
    where
        F: Fn(RunnerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for member in self.route(spec).into_iter().take(2) {
            let counted = Outstanding::start(&member, &spec.version_id);
            let answer = call(member.client()).await;
            if let Err(status) = &answer
                && is_connection_failure(status)
                && !containment::never_reached(status)
            {
                let status = answer.err().expect("matched just above; this is a bug");
                let lost = self.lost(&member, &spec.version_id, status).await;
                drop(counted);
                return Err(lost);
            }
            drop(counted);
            match answer {
                Ok(response) => {
                    self.record(&member, Ok(()));
                    return Ok((response.into_inner(), member));
                }
                Err(status) if is_connection_failure(&status) => {
                    self.record(&member, Err(&status));
                    tracing::warn!(runner.address = %member.address, error = %status, "runner unreachable; trying the next one");
                    last = Some(status);
                }
                Err(status) => {
                    if matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown) {
                        self.record(&member, Err(&status));
                    }
                    return Err(status.into());
                }
            }
        }
        Err(match last {
            Some(status) => {
                ApiError::unavailable(ErrorCode::RunnerUnavailable, "no runner is reachable; try again shortly")
                    .with_source(status)
            }
            None => ApiError::unavailable(ErrorCode::RunnerUnavailable, "no runners are configured"),
        })
    }

    /// The answer to a call of `version_id` lost with `member`'s runner (sent, then the
    /// connection went away), once the death is judged. The call still counts among the
    /// runner's outstanding ones, so the first call lost in a death sees them all.
    async fn lost(&self, member: &Member, version_id: &str, status: tonic::Status) -> ApiError {
        let outstanding = member.outstanding().keys().cloned().collect();
        let fresh = Duration::from_millis(self.inner.config.poll_ms.max(10) * 3);
        let verdict = self.inner.containment.died(&member.address, outstanding, fresh).await;
        self.record(member, Err(&status));
        containment::lost_call(&verdict, version_id, status)
    }

    /// Loads (and optionally pins) a version on the runner its traffic goes to; answers that
    /// runner's address and the model's cost there.
    pub async fn load(&self, spec: ModelSpec, pin: bool) -> Result<(String, u64), ApiError> {
        let timeout = Duration::from_millis(self.inner.config.load_timeout_ms);
        let request = LoadRequest { model: Some(spec.clone()), pin };
        let (answer, member) = self
            .call(&spec, |mut client| {
                let call = crate::trace::grpc_request(request.clone(), timeout);
                async move { client.load(call).await }
            })
            .await?;
        Ok((member.address.clone(), answer.memory_bytes))
    }

    /// Unloads a version from every runner that has it idle; answers, per runner, whether
    /// it did (or why not).
    pub async fn unload(&self, version_id: &str) -> Vec<(String, Result<bool, tonic::Status>)> {
        let members = self.members();
        let calls = members.iter().map(|m| async move {
            let request =
                crate::trace::grpc_request(UnloadRequest { version_id: version_id.to_owned() }, STATUS_TIMEOUT);
            (m.address.clone(), m.client().unload(request).await.map(|a| a.into_inner().unloaded))
        });
        futures::future::join_all(calls).await
    }

    /// Pins or unpins a version on every runner; answers, per runner, whether it has it loaded.
    pub async fn pin(&self, version_id: &str, pinned: bool) -> Vec<(String, Result<bool, tonic::Status>)> {
        let members = self.members();
        let calls = members.iter().map(|m| async move {
            let request =
                crate::trace::grpc_request(PinRequest { version_id: version_id.to_owned(), pinned }, STATUS_TIMEOUT);
            (m.address.clone(), m.client().pin(request).await.map(|a| a.into_inner().loaded))
        });
        futures::future::join_all(calls).await
    }

    /// The status of every runner, asked now, with whether its circuit is open.
    pub async fn statuses(&self) -> Vec<RunnerStatus> {
        let members = self.members();
        let answers = futures::future::join_all(members.iter().map(|m| status(m))).await;
        let now = Instant::now();
        members
            .iter()
            .zip(answers)
            .map(|(m, status)| RunnerStatus {
                address: m.address.clone(),
                circuit_open: m.view().open_until.is_some_and(|t| now < t),
                status,
            })
            .collect()
    }
}

/// One runner's answer to a status call.
pub struct RunnerStatus {
    pub address: String,
    pub circuit_open: bool,
    pub status: Result<StatusResponse, tonic::Status>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(breaker_open_ms: u64) -> RunnerPool {
        let addresses = ["http://127.0.0.1:1".to_owned(), "http://127.0.0.1:2".to_owned()];
        let config = RoutingConfig { breaker_failures: 3, breaker_open_ms, ..RoutingConfig::default() };
        RunnerPool::new(&addresses, config, None).expect("valid addresses")
    }

    fn spec() -> ModelSpec {
        ModelSpec { version_id: "v1".into(), ..ModelSpec::default() }
    }

    fn first(pool: &RunnerPool) -> String {
        pool.route(&spec())[0].address.clone()
    }

    #[tokio::test]
    async fn a_runner_that_keeps_failing_is_taken_out_until_a_good_probe_after_its_time() {
        let pool = pool(50);
        let members = pool.members();
        for m in members.iter() {
            pool.observe(m, Ok(StatusResponse { memory_budget_bytes: 1 << 30, ..StatusResponse::default() }));
        }
        let preferred = first(&pool);
        let member = members.iter().find(|m| m.address == preferred).expect("a member");
        for _ in 0..2 {
            pool.record(member, Err(&tonic::Status::internal("boom")));
        }
        assert_eq!(first(&pool), preferred, "two failures leave the circuit closed");
        pool.record(member, Err(&tonic::Status::internal("boom")));
        assert_ne!(first(&pool), preferred, "the third opens it: the runner goes last");
        pool.observe(member, Ok(StatusResponse::default()));
        assert_ne!(first(&pool), preferred, "a good probe before its time does not close it");
        tokio::time::sleep(Duration::from_millis(60)).await;
        pool.observe(member, Ok(StatusResponse { memory_budget_bytes: 1 << 30, ..StatusResponse::default() }));
        assert_eq!(first(&pool), preferred, "a good probe after its time brings it back");
    }

    #[tokio::test]
    async fn calls_lost_with_a_dead_runner_count_once() {
        let pool = pool(60_000);
        let members = pool.members();
        let member = &members[0];
        pool.observe(member, Ok(StatusResponse::default()));
        let reset = tonic::Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        for _ in 0..5 {
            pool.record(member, Err(&reset));
        }
        let view = member.view();
        assert_eq!((view.healthy, view.failures, view.open_until.is_some()), (Some(false), 1, false));
    }
}
