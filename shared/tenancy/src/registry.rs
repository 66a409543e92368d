//! A variant's side of the tenants registry: register when ready, deregister
//! when stopping.

use std::time::Duration;

use serde::Deserialize;

/// The `registry` section of a variant's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// The registry's base URL; `None` means this instance does not register.
    pub url: Option<String>,
    /// Bearer token for mutations.
    pub token: Option<settings::Secret>,
    /// The URL others should use for this instance (default: loopback and the bound port).
    pub advertised_url: Option<String>,
}

/// Why a registration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Unreachable, or timed out.
    #[error("registry unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
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
    http: reqwest::Client,
    base: String,
    token: Option<settings::Secret>,
}

impl RegistryClient {
    /// A client for the registry at `base` with an optional bearer token.
    pub fn new(base: &str, token: Option<settings::Secret>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a TLS-free reqwest client always builds"),
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// A request about variant `label` of `service`.
    fn variant(
        &self,
        method: reqwest::Method,
        service: protocol::Service,
        label: &str,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}/variants/{service}/{label}", self.base);
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

    /// Registers variant `label` of `service` as answering at `endpoint`.
    pub async fn register(
        &self,
        service: protocol::Service,
        label: &str,
        endpoint: &str,
    ) -> Result<(), RegistryError> {
        let body = serde_json::json!({ "endpoint": endpoint });
        let request = self
            .variant(reqwest::Method::PUT, service, label)
            .json(&body);
        Self::check(request.send().await?).await
    }

    /// Removes the registration of variant `label` of `service`.
    pub async fn deregister(
        &self,
        service: protocol::Service,
        label: &str,
    ) -> Result<(), RegistryError> {
        let request = self.variant(reqwest::Method::DELETE, service, label);
        Self::check(request.send().await?).await
    }
}

/// One variant instance's registration: who it is, where it answers, and
/// the client that tells the registry. Waiter and dispatch variants both
/// [`register`](Self::register) once they can serve and
/// [`deregister`](Self::deregister) before they drain.
#[derive(Debug, Clone)]
pub struct Registration {
    client: RegistryClient,
    service: protocol::Service,
    label: String,
    endpoint: String,
}

impl Registration {
    /// The registration of variant `label` of `service` listening on
    /// `port`; `None` for the baseline or when no registry is configured.
    /// The endpoint is the advertised URL, or loopback and `port`.
    pub fn for_variant(
        settings: &RegistrySettings,
        service: protocol::Service,
        label: &str,
        port: u16,
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
            client: RegistryClient::new(url, settings.token.clone()),
            service,
            label: label.to_string(),
            endpoint,
        })
    }

    /// Tells the registry this variant answers at its endpoint.
    pub async fn register(&self) -> Result<(), RegistryError> {
        self.client
            .register(self.service, &self.label, &self.endpoint)
            .await?;
        tracing::info!(
            service = %self.service,
            label = %self.label,
            endpoint = %self.endpoint,
            "registered with the tenants registry"
        );
        Ok(())
    }

    /// Removes the registration so no new tenant is mapped here; a failure
    /// is logged (the registry keeps a stale endpoint), not returned: a
    /// stopping service has nothing better to do with it.
    pub async fn deregister(&self) {
        if let Err(e) = self.client.deregister(self.service, &self.label).await {
            tracing::warn!(error = %e, label = %self.label, "deregistration failed; the registry keeps a stale endpoint");
        }
    }
}
