//! Recognising a request as a tenant's by more than its `tenant` baggage
//! entry: any baggage entry's value, or an HTTP header matched by a regex.
//!
//! Precedence (documented in the README): a `tenant` baggage entry naming a
//! known tenant wins; otherwise the first tenant, in id order, with a
//! selector that matches. The edge that resolves a tenant this way puts
//! `tenant=<id>` into the outgoing baggage, so every later hop, and every
//! consumer, sees only the `tenant` entry.

use serde::{Deserialize, Serialize};

use crate::routes::RoutesAt;

/// One way to recognise a tenant's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, try_from = "RawSelector")]
pub enum Selector {
    /// A baggage entry with exactly this value:
    /// `{"baggage": "user", "equals": "alice"}`.
    Baggage {
        /// The baggage key.
        baggage: String,
        /// The value it must have.
        equals: String,
    },
    /// An HTTP request header whose value matches a regex:
    /// `{"header": "x-user", "regex": "^alice(@|$)"}`.
    Header {
        /// The header name (case-insensitive).
        header: String,
        /// The pattern; unanchored unless it says otherwise.
        regex: Pattern,
    },
}

/// Either shape of a selector, before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    baggage: Option<String>,
    equals: Option<String>,
    header: Option<String>,
    regex: Option<String>,
}

impl TryFrom<RawSelector> for Selector {
    type Error = String;

    fn try_from(raw: RawSelector) -> Result<Self, String> {
        match raw {
            RawSelector {
                baggage: Some(baggage),
                equals: Some(equals),
                header: None,
                regex: None,
            } => Ok(Selector::Baggage { baggage, equals }),
            RawSelector {
                baggage: None,
                equals: None,
                header: Some(header),
                regex: Some(regex),
            } => Ok(Selector::Header {
                header: header.to_ascii_lowercase(),
                regex: Pattern::new(&regex)?,
            }),
            _ => Err(
                "a selector is {\"baggage\": KEY, \"equals\": VALUE} or {\"header\": NAME, \"regex\": PATTERN}"
                    .into(),
            ),
        }
    }
}

/// A compiled regular expression that serialises as its source.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// Compiles `source`; the error says what is wrong with it.
    pub fn new(source: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(source)
            // A mapping is written by an operator, but read by every
            // service: keep a hostile pattern from costing much.
            .size_limit(64 * 1024)
            .build()
            .map(Self)
            .map_err(|e| format!("invalid regex {source:?}: {e}"))
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Pattern::new(&source).map_err(serde::de::Error::custom)
    }
}

/// What a request offers to be recognised by.
pub trait RequestFacts {
    /// The value of baggage entry `key`.
    fn baggage(&self, key: &str) -> Option<&str>;
    /// The value of HTTP header `name`.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Selector {
    /// Whether `request` matches.
    pub fn matches(&self, request: &impl RequestFacts) -> bool {
        match self {
            Selector::Baggage { baggage, equals } => request.baggage(baggage) == Some(equals),
            Selector::Header { header, regex } => {
                request.header(header).is_some_and(|v| regex.0.is_match(v))
            }
        }
    }
}

/// An HTTP request's headers and the baggage extracted from them.
pub struct HttpFacts<'a> {
    /// The request's headers.
    pub headers: &'a http::HeaderMap,
    /// The baggage of the request's context.
    pub baggage: &'a opentelemetry::baggage::Baggage,
}

impl RequestFacts for HttpFacts<'_> {
    fn baggage(&self, key: &str) -> Option<&str> {
        self.baggage.get(key).map(|value| value.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// The tenant `request` belongs to at `routes`: its `tenant` baggage entry
/// when that names a known tenant, else the first tenant (by id) with a
/// matching selector.
pub fn resolve_tenant(routes: RoutesAt<'_>, request: &impl RequestFacts) -> Option<String> {
    if let Some(named) = request.baggage(protocol::TENANT_BAGGAGE_KEY)
        && routes.tenant(named).is_some()
    {
        return Some(named.to_string());
    }
    routes
        .tenants()
        .into_iter()
        .find(|t| t.selectors.iter().any(|s| s.matches(request)))
        .map(|t| t.id.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::routes::{Routes, TenantRoutes};

    #[derive(Default)]
    struct Request {
        baggage: HashMap<&'static str, &'static str>,
        headers: HashMap<&'static str, &'static str>,
    }

    impl RequestFacts for Request {
        fn baggage(&self, key: &str) -> Option<&str> {
            self.baggage.get(key).copied()
        }
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).copied()
        }
    }

    fn tenant(id: &str, selectors: serde_json::Value) -> TenantRoutes {
        TenantRoutes {
            id: id.into(),
            selectors: serde_json::from_value(selectors).unwrap(),
            ..TenantRoutes::default()
        }
    }

    fn routes() -> Routes {
        let mut routes = Routes::default();
        routes.put_tenant(tenant(
            "alice",
            serde_json::json!([{"baggage": "user", "equals": "alice"}]),
        ));
        routes.put_tenant(tenant(
            "beta",
            serde_json::json!([{"header": "x-build", "regex": "^beta-"}]),
        ));
        routes.put_tenant(tenant(
            "catch-all",
            serde_json::json!([{"header": "x-build", "regex": "."}]),
        ));
        routes.put_tenant(tenant("plain", serde_json::json!([])));
        routes
    }

    fn resolve(request: Request) -> Option<String> {
        resolve_tenant(routes().current(), &request)
    }

    #[test]
    fn a_baggage_entry_or_a_header_pattern_names_the_tenant() {
        let by_user = Request {
            baggage: [("user", "alice")].into(),
            ..Request::default()
        };
        assert_eq!(resolve(by_user).as_deref(), Some("alice"));
        let by_header = Request {
            headers: [("x-build", "beta-42")].into(),
            ..Request::default()
        };
        assert_eq!(
            resolve(by_header).as_deref(),
            Some("beta"),
            "first by id of beta and catch-all"
        );
        assert_eq!(resolve(Request::default()), None);
    }

    #[test]
    fn an_explicit_known_tenant_wins_and_an_unknown_one_is_not_believed() {
        let both = Request {
            baggage: [("tenant", "plain"), ("user", "alice")].into(),
            ..Request::default()
        };
        assert_eq!(resolve(both).as_deref(), Some("plain"));
        let unknown = Request {
            baggage: [("tenant", "nobody"), ("user", "alice")].into(),
            ..Request::default()
        };
        assert_eq!(resolve(unknown).as_deref(), Some("alice"));
    }

    #[test]
    fn a_bad_pattern_is_refused_with_its_reason() {
        let err =
            serde_json::from_value::<Selector>(serde_json::json!({"header": "x", "regex": "("}))
                .unwrap_err()
                .to_string();
        assert!(err.contains("invalid regex"), "{err}");
        let err = serde_json::from_value::<Selector>(serde_json::json!({"header": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a selector is"), "{err}");
        let p = Pattern::new("(").unwrap_err();
        assert!(p.contains("invalid regex"), "{p}");
    }
}
