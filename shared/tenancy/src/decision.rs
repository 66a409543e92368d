//! The per-record decision.

use serde::Deserialize;

use crate::routes::{Route, Routes, RoutesVersion};

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

/// Why a consumer leaves a record alone (`VARIANTS` lists them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
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
    /// The tenant maps this service here, but this variant was not live
    /// when the record was stamped: the baseline has it.
    VariantNotLive,
}

impl SkipReason {
    /// A short, bounded label for metrics and span events.
    pub fn label(self) -> &'static str {
        self.into()
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

/// What a record says about its own route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordRoute<'a> {
    /// The tenant in its baggage; `None` is production traffic.
    pub tenant: Option<&'a str>,
    /// The `tenant-routes` version its producer decided at; `None` for a
    /// producer that does not stamp one (then the consumer's current
    /// routes decide, and consumers lagging differently may disagree).
    pub version: Option<RoutesVersion>,
}

/// Decides whether `consumer` processes a record.
///
/// 1. A tenancy outside `allowed_tenancies` is skipped.
/// 2. With routing off (shadowing), or a single allowed tenancy, everything
///    allowed is processed: route information does not apply.
/// 3. With both tenancies and routing on, the routes *at the record's
///    version* decide: production records belong to the baseline; a test
///    record belongs to the variant its tenant mapped this service to, if
///    that variant was live, and to the baseline otherwise (no mapping, an
///    unknown tenant, a draining tenant, or a variant that was down).
///
/// Every consumer that reads the record with routes at or past its version
/// reaches the same answer, so exactly one consumer group processes it.
/// The caller makes sure `routes` has reached the record's version (see
/// [`crate::RouteTable::reach`]).
pub fn decide(consumer: &ConsumerTenancy, record: RecordRoute<'_>, routes: &Routes) -> Decision {
    let tenancy = match record.tenant {
        None => Tenancy::Production,
        Some(_) => Tenancy::Test,
    };
    if !consumer.allowed.allows(tenancy) {
        return Decision::Skip(SkipReason::TenancyNotAllowed);
    }
    if !consumer.tenant_routing || !consumer.allowed.is_both() {
        return Decision::Process;
    }
    let routes = match record.version {
        Some(version) => routes.at(version),
        None => routes.current(),
    };
    let route = record
        .tenant
        .map_or(Route::Baseline, |t| routes.route(t, &consumer.service));
    match (consumer.environment, route) {
        (Environment::Production, Route::Baseline | Route::VariantDown(_)) => Decision::Process,
        (Environment::Production, Route::Variant(_)) => Decision::Skip(SkipReason::RoutedToVariant),
        (Environment::Sandbox, _) if tenancy == Tenancy::Production => {
            Decision::Skip(SkipReason::ProductionRecord)
        }
        (Environment::Sandbox, Route::Variant(label)) if label == consumer.label => {
            Decision::Process
        }
        (Environment::Sandbox, Route::Variant(_)) => {
            Decision::Skip(SkipReason::RoutedToOtherVariant)
        }
        (Environment::Sandbox, Route::VariantDown(label)) if label == consumer.label => {
            Decision::Skip(SkipReason::VariantNotLive)
        }
        (Environment::Sandbox, Route::VariantDown(_)) => {
            Decision::Skip(SkipReason::RoutedToOtherVariant)
        }
        (Environment::Sandbox, Route::Baseline) => Decision::Skip(SkipReason::NotRoutedToVariants),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{RouteRecord, TenantRoutes, TenantState, VariantEndpoint};

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

    fn variant(label: &str, live: bool) -> VariantEndpoint {
        VariantEndpoint {
            service: "waiter".into(),
            label: label.into(),
            endpoint: "http://127.0.0.1:1".into(),
            live,
        }
    }

    fn tenant(id: &str, services: &[(&str, &str)]) -> TenantRoutes {
        TenantRoutes {
            id: id.into(),
            services: services
                .iter()
                .map(|(s, l)| (s.to_string(), l.to_string()))
                .collect(),
            ..TenantRoutes::default()
        }
    }

    /// Route information for tenant `t`'s waiter.
    #[derive(Clone, Copy, Debug)]
    enum RouteInfo {
        NotApplicable,
        Absent,
        Present,
        HostMatch,
        HostMismatch,
        /// Mapped to this consumer's label, but that variant is down.
        HostMatchDown,
    }

    fn routes(route: RouteInfo) -> Routes {
        let mut routes = Routes::default();
        routes.put_variant(variant(
            "sbx-123",
            !matches!(route, RouteInfo::HostMatchDown),
        ));
        routes.put_variant(variant("sbx-999", true));
        let label = match route {
            RouteInfo::NotApplicable | RouteInfo::Absent => None,
            RouteInfo::Present | RouteInfo::HostMatch | RouteInfo::HostMatchDown => Some("sbx-123"),
            RouteInfo::HostMismatch => Some("sbx-999"),
        };
        if let Some(label) = label {
            routes.put_tenant(tenant("t", &[("waiter", label)]));
        }
        routes
    }

    fn now(tenant: Option<&str>) -> RecordRoute<'_> {
        RecordRoute {
            tenant,
            version: None,
        }
    }

    /// The consumption decision table, row by row: consumer environment,
    /// record tenancy, route information, allowed tenancies → process?
    /// Rows 1–10 are the published table; 11–12 add a variant that is down.
    #[test]
    fn the_consumption_decision_table() {
        use Environment::{Production as ProdEnv, Sandbox};
        let rows = [
            (ProdEnv, None, RouteInfo::NotApplicable, PROD, true),
            (ProdEnv, Some("t"), RouteInfo::NotApplicable, PROD, false),
            (Sandbox, None, RouteInfo::NotApplicable, TEST, false),
            (Sandbox, Some("t"), RouteInfo::NotApplicable, TEST, true),
            (ProdEnv, None, RouteInfo::NotApplicable, BOTH, true),
            (ProdEnv, Some("t"), RouteInfo::Absent, BOTH, true),
            (ProdEnv, Some("t"), RouteInfo::Present, BOTH, false),
            (Sandbox, None, RouteInfo::NotApplicable, BOTH, false),
            (Sandbox, Some("t"), RouteInfo::HostMismatch, BOTH, false),
            (Sandbox, Some("t"), RouteInfo::HostMatch, BOTH, true),
            (ProdEnv, Some("t"), RouteInfo::HostMatchDown, BOTH, true),
            (Sandbox, Some("t"), RouteInfo::HostMatchDown, BOTH, false),
        ];
        for (row, (environment, tenant, route, allowed, expected)) in rows.into_iter().enumerate() {
            let decision = decide(&consumer(environment, allowed), now(tenant), &routes(route));
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
                decide(&shadow, now(tenant), &routes(RouteInfo::HostMismatch)),
                Decision::Process
            );
        }
        let mut prod_only = shadow.clone();
        prod_only.allowed = PROD;
        assert_eq!(
            decide(&prod_only, now(Some("t")), &Routes::default()),
            Decision::Skip(SkipReason::TenancyNotAllowed)
        );
    }

    /// Who decides what for one record of `tenant` under `mapped`: the
    /// baseline waiter, variant `sbx-123`, variant `sbx-456`.
    fn decisions(mapped: &[(&str, &str)], tenant: Option<&str>) -> [Decision; 3] {
        let mut routes = Routes::default();
        routes.put_variant(variant("sbx-123", true));
        routes.put_variant(variant("sbx-456", true));
        routes.put_tenant(self::tenant("123", mapped));
        [
            ConsumerTenancy::baseline("waiter"),
            ConsumerTenancy::variant("waiter", "sbx-123"),
            ConsumerTenancy::variant("waiter", "sbx-456"),
        ]
        .map(|consumer| decide(&consumer, now(tenant), &routes))
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

    /// One change the registry writes to `tenant-routes`.
    #[derive(Debug, Clone, Copy)]
    enum Change {
        MapToX,
        MapToY,
        Unmap,
        Drain,
        StopX,
        StartX,
        StopY,
    }

    const CHANGES: [Change; 7] = [
        Change::MapToX,
        Change::MapToY,
        Change::Unmap,
        Change::Drain,
        Change::StopX,
        Change::StartX,
        Change::StopY,
    ];

    fn record_of(change: Change) -> RouteRecord {
        let mapped = |label: &str| Some(tenant("t", &[("waiter", label)]));
        let live = |label: &str, live: bool| {
            RouteRecord::Variant("waiter".into(), label.into(), Some(variant(label, live)))
        };
        match change {
            Change::MapToX => RouteRecord::Tenant("t".into(), mapped("x")),
            Change::MapToY => RouteRecord::Tenant("t".into(), mapped("y")),
            Change::Unmap => RouteRecord::Tenant("t".into(), None),
            Change::Drain => RouteRecord::Tenant(
                "t".into(),
                Some(TenantRoutes {
                    state: TenantState::Draining,
                    ..tenant("t", &[("waiter", "x")])
                }),
            ),
            Change::StopX => live("x", false),
            Change::StartX => live("x", true),
            Change::StopY => live("y", false),
        }
    }

    /// The table after the first `n` records: both variants registered and
    /// live, then `changes`.
    fn table_after(changes: &[Change], n: usize) -> Routes {
        let mut routes = Routes::default();
        routes.put_variant(variant("x", true));
        routes.put_variant(variant("y", true));
        for change in &changes[..n] {
            routes.apply(routes.version(), record_of(*change));
        }
        routes
    }

    /// Every sequence of up to three changes, every version a producer's
    /// table may have stamped (it lags by any amount), and every position
    /// each of the three groups' tables may have reached when it reads the
    /// record (each lags, or leads, independently): how many groups
    /// process the record. `stamped` says whether the record carries its
    /// version.
    fn processors(stamped: bool) -> Vec<(Vec<Change>, u64, [usize; 3], usize)> {
        let groups = [
            ConsumerTenancy::baseline("waiter"),
            ConsumerTenancy::variant("waiter", "x"),
            ConsumerTenancy::variant("waiter", "y"),
        ];
        let mut sequences: Vec<Vec<Change>> = vec![vec![]];
        for _ in 0..3 {
            let longer: Vec<Vec<Change>> = sequences
                .iter()
                .filter(|s| s.len() == sequences.last().unwrap().len())
                .flat_map(|s| {
                    CHANGES.iter().map(move |c| {
                        let mut s = s.clone();
                        s.push(*c);
                        s
                    })
                })
                .collect();
            sequences.extend(longer);
        }
        let mut outcomes = Vec::new();
        for changes in sequences {
            let base = table_after(&[], 0).version();
            let tables: Vec<Routes> = (0..=changes.len())
                .map(|n| table_after(&changes, n))
                .collect();
            for producer in 0..tables.len() {
                let version = tables[producer].version();
                // A stamped record is read only once the consumer's table
                // has reached its version (the consumer waits); an
                // unstamped one is read whenever.
                let first = if stamped { producer } else { 0 };
                for b in first..tables.len() {
                    for x in first..tables.len() {
                        for y in first..tables.len() {
                            let positions = [b, x, y];
                            let record = RecordRoute {
                                tenant: Some("t"),
                                version: stamped.then_some(version),
                            };
                            let count = groups
                                .iter()
                                .zip(positions)
                                .filter(|(group, at)| {
                                    decide(group, record, &tables[*at]) == Process
                                })
                                .count();
                            outcomes.push((changes.clone(), version - base, positions, count));
                        }
                    }
                }
            }
        }
        outcomes
    }

    /// (6a) Exactly one group processes every stamped record, whatever the
    /// order of changes, production and consumption.
    #[test]
    fn a_stamped_record_has_exactly_one_processor_in_every_interleaving() {
        let outcomes = processors(true);
        assert!(outcomes.len() > 10_000, "{} cases", outcomes.len());
        let wrong: Vec<_> = outcomes.iter().filter(|o| o.3 != 1).take(5).collect();
        assert!(wrong.is_empty(), "not exactly one processor: {wrong:?}");
    }

    /// The same enumeration without the version: consumers deciding from
    /// their own table lose records and process others twice, which is
    /// what the stamp fixes.
    #[test]
    fn an_unstamped_record_can_be_lost_or_doubled_while_routes_change() {
        let outcomes = processors(false);
        assert!(outcomes.iter().any(|o| o.3 == 0), "none lost");
        assert!(outcomes.iter().any(|o| o.3 == 2), "none doubled");
    }
}
