//! A variant's side of the tenants registry: register when ready, renew the
//! lease while running, leave when stopping.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `registry` section of a variant's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// The registry's base URL; `None` means this instance does not register.
    pub url: Option<String>,
    /// Bearer token for mutations.
    pub token: Option<settings::Secret>,
    /// The URL others should use for this instance (default: loopback and the bound port).
    pub advertised_url: Option<String>,
    /// How often the registration (the variant's lease) is renewed; well
    /// under the registry's `tenants.lease.ttl`.
    #[serde(with = "settings::duration", default = "default_renew_every")]
    pub renew_every: Duration,
}

fn default_renew_every() -> Duration {
    Duration::from_secs(1)
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: None,
            token: None,
            advertised_url: None,
            renew_every: default_renew_every(),
        }
    }
}

/// What one variant instance processed and skipped of one tenant's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCounts {
    /// Records of the tenant this instance processed.
    pub processed: u64,
    /// Records of the tenant this instance read and left to another group.
    pub skipped: u64,
}

/// `PUT /variants/{service}/{label}`: a registration, and each renewal of
/// its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRenewal {
    /// Where the variant answers HTTP.
    pub endpoint: String,
    /// Which instance renews (a variant may run several).
    #[serde(default)]
    pub instance: Option<String>,
    /// Per tenant, what this instance has processed and skipped so far.
    #[serde(default)]
    pub counts: BTreeMap<String, TenantCounts>,
}

/// Per-tenant counts of one instance, sent with each lease renewal. Only
/// the first [`TenantTally::MAX_TENANTS`] tenants seen are counted: the
/// tenant comes from a record's baggage, which any producer can fill.
#[derive(Debug, Clone, Default)]
pub struct TenantTally(Arc<Mutex<BTreeMap<String, TenantCounts>>>);

impl TenantTally {
    /// The most tenants counted.
    pub const MAX_TENANTS: usize = 1000;

    fn count(&self, tenant: &str, add: impl FnOnce(&mut TenantCounts)) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = counts.get_mut(tenant) {
            add(c);
        } else if counts.len() < Self::MAX_TENANTS {
            add(counts.entry(tenant.to_string()).or_default());
        }
    }

    /// A record of `tenant` was processed here.
    pub fn processed(&self, tenant: &str) {
        self.count(tenant, |c| c.processed += 1);
    }

    /// A record of `tenant` was left to another group.
    pub fn skipped(&self, tenant: &str) {
        self.count(tenant, |c| c.skipped += 1);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, TenantCounts> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Why a registration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Unreachable, or timed out.
    #[error("registry unreachable: {0}")]
    Unreachable(#[from] propagation::ClientError),
    /// The registry refused, saying why.
    #[error("registry refused ({status}): {body}")]
    Refused {
        /// Its status.
        status: u16,
        /// Its message.
        body: String,
    },
}

/// Talks to the tenants registry on behalf of one variant.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: propagation::ClientWithMiddleware,
    base: String,
    token: Option<settings::Secret>,
}

impl RegistryClient {
    /// A client for the registry at `base` with an optional bearer token,
    /// calling on behalf of `variant` of `service` (named on its CLIENT spans).
    pub fn new(
        base: &str,
        token: Option<settings::Secret>,
        service: protocol::Service,
        variant: &str,
    ) -> Self {
        Self {
            http: propagation::traced_client(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("a TLS-free reqwest client always builds"),
                service.as_str(),
                variant,
            ),
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// A request about variant `label` of `service` (and `rest` of its path).
    fn variant(
        &self,
        method: reqwest::Method,
        service: protocol::Service,
        label: &str,
        rest: &str,
    ) -> propagation::RequestBuilder {
        let url = format!("{}/variants/{service}/{label}{rest}", self.base);
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token.expose()),
            None => builder,
        }
    }

    async fn check(response: reqwest::Response) -> Result<(), RegistryError> {
        if response.status().is_success() {
            return Ok(());
        }
        Err(RegistryError::Refused {
            status: response.status().as_u16(),
            body: response.text().await.unwrap_or_default(),
        })
    }

    /// Registers variant `label` of `service`, or renews its lease.
    pub async fn renew(
        &self,
        service: protocol::Service,
        label: &str,
        renewal: &LeaseRenewal,
    ) -> Result<(), RegistryError> {
        let request = self
            .variant(reqwest::Method::PUT, service, label, "")
            .json(renewal);
        Self::check(request.send().await?).await
    }

    /// Gives up `instance`'s lease on variant `label` of `service`; the
    /// variant stops being live when its last instance leaves.
    pub async fn leave(
        &self,
        service: protocol::Service,
        label: &str,
        instance: &str,
    ) -> Result<(), RegistryError> {
        let request = self.variant(
            reqwest::Method::DELETE,
            service,
            label,
            &format!("/instances/{instance}"),
        );
        Self::check(request.send().await?).await
    }
}

/// One variant instance's registration: who it is, where it answers, and
/// the client that tells the registry. Waiter and dispatch variants both
/// [`register`](Self::register) once they can serve, [`keep_alive`]
/// (Self::keep_alive) while they run, and [`deregister`](Self::deregister)
/// before they drain.
#[derive(Debug, Clone)]
pub struct Registration {
    client: RegistryClient,
    service: protocol::Service,
    label: String,
    endpoint: String,
    instance: String,
    renew_every: Duration,
    tally: TenantTally,
}

impl Registration {
    /// The registration of process `instance` (its `service.instance.id`)
    /// serving variant `label` of `service` on `port`; `None` for the
    /// baseline or when no registry is configured. The endpoint is the
    /// advertised URL, or loopback and `port`. The lease is held by
    /// `instance-port`: one process may run several instances of a variant
    /// (the demo scaling a waiter out), and one leaving must not end the
    /// others' leases. `tally`'s counts go with every renewal.
    pub fn for_variant(
        settings: &RegistrySettings,
        service: protocol::Service,
        label: &str,
        port: u16,
        instance: &str,
        tally: TenantTally,
    ) -> Option<Self> {
        let url = settings.url.as_deref()?;
        if label == protocol::BASELINE {
            return None;
        }
        let endpoint = settings
            .advertised_url
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
        Some(Self {
            client: RegistryClient::new(url, settings.token.clone(), service, label),
            service,
            label: label.to_string(),
            endpoint,
            instance: format!("{instance}-{port}"),
            renew_every: settings.renew_every,
            tally,
        })
    }

    async fn renew(&self) -> Result<(), RegistryError> {
        let renewal = LeaseRenewal {
            endpoint: self.endpoint.clone(),
            instance: Some(self.instance.clone()),
            counts: self.tally.snapshot(),
        };
        self.client.renew(self.service, &self.label, &renewal).await
    }

    /// Tells the registry this variant answers at its endpoint.
    pub async fn register(&self) -> Result<(), RegistryError> {
        self.renew().await?;
        tracing::info!(
            service = %self.service,
            label = %self.label,
            endpoint = %self.endpoint,
            instance = %self.instance,
            "registered with the tenants registry"
        );
        Ok(())
    }

    /// Renews the lease every `renew_every` until dropped (abort the task
    /// running it). A failed renewal is logged once per outage and retried:
    /// the registry marks the variant not live if the outage outlasts its
    /// lease, and live again at the next renewal that reaches it.
    pub async fn keep_alive(&self) {
        let mut failing = false;
        loop {
            tokio::time::sleep(self.renew_every).await;
            // A renewal a second per instance would be a trace a second in
            // Jaeger, burying the requests; its spans are left unsampled
            // (the registry's SERVER span follows, parent-based). The
            // registration itself, and leaving, are traced.
            let renewal = tracing::info_span!("lease renewal");
            let _ = renewal.set_parent(propagation::unsampled_context());
            match self.renew().instrument(renewal).await {
                Ok(()) if failing => {
                    tracing::info!(label = %self.label, "lease renewed again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, label = %self.label, "lease renewal failed; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Gives up this instance's lease, so the variant stops being live at
    /// once when it was the last one; a failure is logged (the lease then
    /// lapses by itself), not returned: a stopping service has nothing
    /// better to do with it.
    pub async fn deregister(&self) {
        if let Err(e) = self
            .client
            .leave(self.service, &self.label, &self.instance)
            .await
        {
            tracing::warn!(error = %e, label = %self.label, "leaving failed; the lease lapses by itself");
        }
    }
}
