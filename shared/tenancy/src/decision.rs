//! The per-record decision.

use serde::Deserialize;

use crate::routes::Routes;

/// Where a consumer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// The shared baseline.
    Production,
    /// A variant ("under test") deployment with its own label.
    Sandbox,
}

/// A record's tenancy: production traffic, or a test tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenancy {
    /// No tenant in the baggage.
    Production,
    /// A tenant id in the baggage.
    Test,
}

/// Which tenancies a consumer accepts (`allowed_tenancies: [prod, test]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedTenancies {
    /// Production records are accepted.
    pub production: bool,
    /// Test-tenant records are accepted.
    pub test: bool,
}

impl AllowedTenancies {
    /// Both tenancies (the default; routing then decides).
    pub const BOTH: Self = Self {
        production: true,
        test: true,
    };

    fn allows(self, tenancy: Tenancy) -> bool {
        match tenancy {
            Tenancy::Production => self.production,
            Tenancy::Test => self.test,
        }
    }

    fn is_both(self) -> bool {
        self.production && self.test
    }
}

impl<'de> Deserialize<'de> for AllowedTenancies {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        let mut allowed = Self {
            production: false,
            test: false,
        };
        for name in &names {
            match name.as_str() {
                "prod" | "production" => allowed.production = true,
                "test" => allowed.test = true,
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "unknown tenancy `{other}`; expected `prod` or `test`"
                    )));
                }
            }
        }
        if !allowed.production && !allowed.test {
            return Err(serde::de::Error::custom(
                "allowed_tenancies must name at least one of `prod`, `test`",
            ));
        }
        Ok(allowed)
    }
}

/// One consumer's tenancy configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerTenancy {
    /// The service the consumer belongs to (`waiter`), as named in routes.
    pub service: String,
    /// `baseline`, or the variant label (`sbx-123`).
    pub label: String,
    /// Baseline or variant.
    pub environment: Environment,
    /// Tenancies accepted at all.
    pub allowed: AllowedTenancies,
    /// Route test records by the registry's mapping (`false`: shadow every
    /// allowed record).
    pub tenant_routing: bool,
}

impl ConsumerTenancy {
    /// The baseline of `service`: production, both tenancies, routed.
    pub fn baseline(service: &str) -> Self {
        Self {
            service: service.into(),
            label: protocol::BASELINE.into(),
            environment: Environment::Production,
            allowed: AllowedTenancies::BOTH,
            tenant_routing: true,
        }
    }

    /// A variant of `service` labelled `label`: sandbox, both tenancies, routed.
    pub fn variant(service: &str, label: &str) -> Self {
        Self {
            service: service.into(),
            label: label.into(),
            environment: Environment::Sandbox,
            allowed: AllowedTenancies::BOTH,
            tenant_routing: true,
        }
    }
}

/// Why a consumer leaves a record alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The record's tenancy is not in `allowed_tenancies`.
    TenancyNotAllowed,
    /// A variant never processes production records.
    ProductionRecord,
    /// The tenant maps this service to a variant, so the baseline leaves it.
    RoutedToVariant,
    /// The tenant maps this service to a different variant.
    RoutedToOtherVariant,
    /// The tenant does not map this service to any variant; the baseline has it.
    NotRoutedToVariants,
}

impl SkipReason {
    /// A short, bounded label for metrics and span events.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::TenancyNotAllowed => "tenancy_not_allowed",
            SkipReason::ProductionRecord => "production_record",
            SkipReason::RoutedToVariant => "routed_to_variant",
            SkipReason::RoutedToOtherVariant => "routed_to_other_variant",
            SkipReason::NotRoutedToVariants => "not_routed_to_variants",
        }
    }
}

/// What a consumer does with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Handle it.
    Process,
    /// Leave it (and commit past it).
    Skip(SkipReason),
}

/// Decides whether `consumer` processes a record of `tenant` (from baggage).
///
/// 1. A tenancy outside `allowed_tenancies` is skipped.
/// 2. With routing off (shadowing), or a single allowed tenancy, everything
///    allowed is processed: route information does not apply.
/// 3. With both tenancies and routing on, the registry's mapping decides:
///    production records belong to the baseline; a test record belongs to the
///    variant its tenant maps this service to, or to the baseline when the
///    tenant maps this service to none (an unknown tenant included).
pub fn decide(consumer: &ConsumerTenancy, tenant: Option<&str>, routes: &Routes) -> Decision {
    let tenancy = match tenant {
        None => Tenancy::Production,
        Some(_) => Tenancy::Test,
    };
    if !consumer.allowed.allows(tenancy) {
        return Decision::Skip(SkipReason::TenancyNotAllowed);
    }
    if !consumer.tenant_routing || !consumer.allowed.is_both() {
        return Decision::Process;
    }
    let route = tenant.and_then(|t| routes.variant_for(t, &consumer.service));
    match (consumer.environment, route) {
        (Environment::Production, None) => Decision::Process,
        (Environment::Production, Some(_)) => Decision::Skip(SkipReason::RoutedToVariant),
        (Environment::Sandbox, _) if tenancy == Tenancy::Production => {
            Decision::Skip(SkipReason::ProductionRecord)
        }
        (Environment::Sandbox, Some(label)) if label == consumer.label => Decision::Process,
        (Environment::Sandbox, Some(_)) => Decision::Skip(SkipReason::RoutedToOtherVariant),
        (Environment::Sandbox, None) => Decision::Skip(SkipReason::NotRoutedToVariants),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::TenantRoutes;

    const PROD: AllowedTenancies = AllowedTenancies {
        production: true,
        test: false,
    };
    const TEST: AllowedTenancies = AllowedTenancies {
        production: false,
        test: true,
    };
    const BOTH: AllowedTenancies = AllowedTenancies::BOTH;

    fn consumer(environment: Environment, allowed: AllowedTenancies) -> ConsumerTenancy {
        ConsumerTenancy {
            service: "waiter".into(),
            label: match environment {
                Environment::Production => "baseline".into(),
                Environment::Sandbox => "sbx-123".into(),
            },
            environment,
            allowed,
            tenant_routing: true,
        }
    }

    /// Route information for tenant `t`'s waiter.
    #[derive(Clone, Copy, Debug)]
    enum Route {
        NotApplicable,
        Absent,
        Present,
        HostMatch,
        HostMismatch,
    }

    fn routes(route: Route) -> Routes {
        let mut routes = Routes::default();
        let label = match route {
            Route::NotApplicable | Route::Absent => None,
            Route::Present | Route::HostMatch => Some("sbx-123"),
            Route::HostMismatch => Some("sbx-999"),
        };
        if let Some(label) = label {
            routes.put_tenant(TenantRoutes {
                id: "t".into(),
                services: [("waiter".to_string(), label.to_string())].into(),
            });
        }
        routes
    }

    /// The consumption decision table, row by row: consumer environment,
    /// record tenancy, route information, allowed tenancies → process?
    #[test]
    fn the_consumption_decision_table() {
        use Environment::{Production as ProdEnv, Sandbox};
        let rows = [
            (ProdEnv, None, Route::NotApplicable, PROD, true),
            (ProdEnv, Some("t"), Route::NotApplicable, PROD, false),
            (Sandbox, None, Route::NotApplicable, TEST, false),
            (Sandbox, Some("t"), Route::NotApplicable, TEST, true),
            (ProdEnv, None, Route::NotApplicable, BOTH, true),
            (ProdEnv, Some("t"), Route::Absent, BOTH, true),
            (ProdEnv, Some("t"), Route::Present, BOTH, false),
            (Sandbox, None, Route::NotApplicable, BOTH, false),
            (Sandbox, Some("t"), Route::HostMismatch, BOTH, false),
            (Sandbox, Some("t"), Route::HostMatch, BOTH, true),
        ];
        for (row, (environment, tenant, route, allowed, expected)) in rows.into_iter().enumerate() {
            let decision = decide(&consumer(environment, allowed), tenant, &routes(route));
            assert_eq!(
                decision == Decision::Process,
                expected,
                "row {}: {environment:?} {tenant:?} {route:?} {allowed:?} → {decision:?}",
                row + 1
            );
        }
    }

    #[test]
    fn shadowing_processes_everything_allowed() {
        let mut shadow = consumer(Environment::Sandbox, BOTH);
        shadow.tenant_routing = false;
        for tenant in [None, Some("t")] {
            assert_eq!(
                decide(&shadow, tenant, &routes(Route::HostMismatch)),
                Decision::Process
            );
        }
        let mut prod_only = shadow.clone();
        prod_only.allowed = PROD;
        assert_eq!(
            decide(&prod_only, Some("t"), &Routes::default()),
            Decision::Skip(SkipReason::TenancyNotAllowed)
        );
    }

    fn mapping(tenant: &str, services: &[(&str, &str)]) -> Routes {
        let mut routes = Routes::default();
        routes.put_tenant(TenantRoutes {
            id: tenant.into(),
            services: services
                .iter()
                .map(|(s, l)| (s.to_string(), l.to_string()))
                .collect(),
        });
        routes
    }

    /// Who decides what for one record of `tenant` under `mapped`: the
    /// baseline waiter, variant `sbx-123`, variant `sbx-456`.
    fn decisions(mapped: &[(&str, &str)], tenant: Option<&str>) -> [Decision; 3] {
        let routes = mapping("123", mapped);
        [
            ConsumerTenancy::baseline("waiter"),
            ConsumerTenancy::variant("waiter", "sbx-123"),
            ConsumerTenancy::variant("waiter", "sbx-456"),
        ]
        .map(|consumer| decide(&consumer, tenant, &routes))
    }

    use Decision::{Process, Skip};
    use SkipReason::*;

    #[test]
    fn a_tenant_forking_only_dispatch_is_served_by_the_baseline_waiter() {
        assert_eq!(
            decisions(&[("dispatch", "sbx-123")], Some("123")),
            [
                Process,
                Skip(NotRoutedToVariants),
                Skip(NotRoutedToVariants)
            ]
        );
    }

    #[test]
    fn a_tenant_forking_the_waiter_is_served_only_by_its_variant() {
        let mapped = [("dispatch", "sbx-123"), ("waiter", "sbx-123")];
        assert_eq!(
            decisions(&mapped, Some("123")),
            [Skip(RoutedToVariant), Process, Skip(RoutedToOtherVariant)]
        );
    }

    #[test]
    fn an_unknown_tenant_goes_to_the_baseline() {
        assert_eq!(
            decisions(&[("waiter", "sbx-123")], Some("unknown")),
            [
                Process,
                Skip(NotRoutedToVariants),
                Skip(NotRoutedToVariants)
            ]
        );
    }

    #[test]
    fn production_records_never_reach_a_variant() {
        assert_eq!(
            decisions(&[("waiter", "sbx-123")], None),
            [Process, Skip(ProductionRecord), Skip(ProductionRecord)]
        );
    }

    #[test]
    fn allowed_tenancies_parse_from_names_and_refuse_nonsense() {
        let both: AllowedTenancies = serde_json::from_str(r#"["prod","test"]"#).unwrap();
        assert_eq!(both, BOTH);
        let err = serde_json::from_str::<AllowedTenancies>(r#"["staging"]"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown tenancy `staging`"),
            "{err}"
        );
        assert!(serde_json::from_str::<AllowedTenancies>("[]").is_err());
    }
}
