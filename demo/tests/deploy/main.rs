//! The deployment files, checked without a Docker engine or a cluster:
//! `docker-compose.yml` and its tenant overlay, the Dockerfile, the
//! collector, Prometheus and Grafana files, and the Kubernetes manifests
//! must agree with each other and with what the binaries actually read,
//! listen on and emit.

mod files;

use std::collections::{BTreeMap, BTreeSet};

use files::{
    Binaries, Compose, Kustomization, dockerfile_binaries, emitted_metrics, promql_metric_names,
    root, yaml,
};
use serde_yaml::Value;

/// Variables a waiter-bus binary reads besides its `WAITER_BUS__…` settings.
const OTHER_VARIABLES: &[&str] = &[
    "KAFKA_BOOTSTRAP_SERVERS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "RUST_LOG",
];

/// Checks one container's environment against what `binary` reads.
fn check_environment(
    binaries: &Binaries,
    binary: &str,
    environment: &BTreeMap<String, String>,
    wherein: &str,
) {
    for name in environment.keys() {
        if OTHER_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let key = binaries
            .setting_for(binary, name)
            .unwrap_or_else(|| panic!("{wherein}: `{name}` is not a variable `{binary}` reads"));
        assert!(
            binaries.has_setting(binary, &key),
            "{wherein}: `{name}` names `{key}`, which `{binary}`'s settings do not have"
        );
    }
}

#[test]
fn compose_services_exist_have_memory_limits_and_mount_files_that_exist() {
    let compose = Compose::load(&["docker-compose.yml", "deploy/compose/tenant.yml"]);
    assert!(
        compose.services.len() >= 12,
        "{:?}",
        compose.services.keys()
    );
    for (name, service) in &compose.services {
        assert!(
            service["deploy"]["resources"]["limits"]["memory"].is_string(),
            "{name} has no memory limit"
        );
        for dependency in files::depends_on(service) {
            assert!(
                compose.services.contains_key(&dependency),
                "{name} depends on `{dependency}`, which is not a service"
            );
        }
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(
                root().join(host).exists(),
                "{name} mounts {host}, which does not exist"
            );
        }
    }
    // `docker compose up` alone brings up the baseline: nothing it starts
    // by default depends on the overlay.
    let baseline = Compose::load(&["docker-compose.yml"]);
    for service in ["kafka", "otel-collector", "jaeger", "prometheus", "grafana"] {
        assert!(baseline.services.contains_key(service), "{service}");
    }
    for service in Binaries::SERVICES {
        assert!(baseline.services.contains_key(*service), "{service}");
    }
}

#[test]
fn every_binary_compose_and_kubernetes_run_is_one_the_dockerfile_builds() {
    let built = dockerfile_binaries();
    let binaries = Binaries::discover();
    for binary in &built {
        assert!(
            binaries.exists(binary),
            "the Dockerfile builds `{binary}`, which no crate has"
        );
    }
    let compose = Compose::load(&["docker-compose.yml", "deploy/compose/tenant.yml"]);
    let mut ran = BTreeSet::new();
    for (name, service) in compose.project_services() {
        let binary = files::compose_binary(&service).unwrap();
        if binary != "/bin/sh" {
            assert!(built.contains(&binary), "{name} runs `{binary}`, not built");
            ran.insert(binary);
        }
    }
    for kustomization in Kustomization::all() {
        for container in kustomization.project_containers() {
            let binary = files::command_binary(&container.value["command"]).unwrap();
            if binary != "/bin/sh" {
                assert!(
                    built.contains(&binary),
                    "{}: {} runs `{binary}`, not built",
                    kustomization.dir.display(),
                    container.name
                );
                ran.insert(binary);
            }
        }
    }
    for service in Binaries::SERVICES {
        assert!(ran.contains(*service), "nothing runs `{service}`");
    }
}

#[test]
fn compose_environment_ports_and_addresses_line_up_with_the_binaries() {
    let binaries = Binaries::discover();
    let compose = Compose::load(&["docker-compose.yml", "deploy/compose/tenant.yml"]);
    let mut ports = BTreeMap::new();
    for (name, service) in compose.project_services() {
        let binary = files::compose_binary(&service).unwrap();
        if !binaries.is_service(&binary) {
            continue;
        }
        let environment = files::compose_environment(&service["environment"]);
        check_environment(&binaries, &binary, &environment, &name);
        let port = environment
            .get("WAITER_BUS__HTTP__PORT")
            .map(|p| p.parse::<u16>().unwrap())
            .unwrap_or_else(|| binaries.default_port(&binary));
        ports.insert(name.clone(), port);
        let health = service["healthcheck"]["test"]
            .as_sequence()
            .and_then(|t| t.last())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{name} has no health check"));
        assert_eq!(
            health,
            format!("http://localhost:{port}/readyz"),
            "{name}'s health check"
        );
        for published in service["ports"].as_sequence().into_iter().flatten() {
            let inside = published.as_str().unwrap().rsplit(':').next().unwrap();
            assert_eq!(inside, port.to_string(), "{name} publishes {published:?}");
        }
    }
    // Links the console hands to the user's browser: published ports on
    // the host, not addresses inside the stack.
    const BROWSER_LINKS: [&str; 1] = ["WAITER_BUS__CONSOLE__JAEGER_URL"];
    let published: BTreeSet<u16> = compose
        .services
        .values()
        .flat_map(|s| s["ports"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str()?.split(':').next()?.parse().ok())
        .collect();
    // Every address one service gives another names a service on its port.
    for (name, service) in compose.project_services() {
        for (variable, value) in files::compose_environment(&service["environment"]) {
            if BROWSER_LINKS.contains(&variable.as_str()) {
                let (host, port) = files::http_address(&value).unwrap();
                assert_eq!(
                    host, "localhost",
                    "{name}: {variable} is opened by a browser"
                );
                assert!(
                    published.contains(&port),
                    "{name}: {variable}: nothing publishes {port}"
                );
                continue;
            }
            if let Some((host, port)) = files::http_address(&value) {
                let expected = match host.as_str() {
                    "otel-collector" => 4317,
                    _ => *ports
                        .get(&host)
                        .unwrap_or_else(|| panic!("{name}: {variable} names `{host}`")),
                };
                assert_eq!(port, expected, "{name}: {variable}={value}");
            }
        }
    }
    // Prometheus scrapes each service where it listens.
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let mut scraped = BTreeSet::new();
    for job in prometheus["scrape_configs"].as_sequence().unwrap() {
        for config in job["static_configs"].as_sequence().unwrap() {
            for target in config["targets"].as_sequence().unwrap() {
                let (host, port) = target.as_str().unwrap().split_once(':').unwrap();
                let port: u16 = port.parse().unwrap();
                if host == "otel-collector" {
                    assert_eq!(port, 8889, "the collector's Prometheus exporter");
                } else {
                    assert_eq!(Some(&port), ports.get(host), "scrape target {host}:{port}");
                }
                scraped.insert(host.to_string());
            }
        }
    }
    for service in ports.keys() {
        assert!(
            scraped.contains(service),
            "Prometheus does not scrape {service}"
        );
    }
}

#[test]
fn the_collector_pipelines_use_defined_components_and_reach_jaeger() {
    let collector = yaml("deploy/otel-collector/config.yaml");
    let defined = |section: &str| -> BTreeSet<String> {
        collector[section]
            .as_mapping()
            .map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let (receivers, processors, exporters, connectors) = (
        defined("receivers"),
        defined("processors"),
        defined("exporters"),
        defined("connectors"),
    );
    let pipelines = collector["service"]["pipelines"].as_mapping().unwrap();
    assert!(pipelines.contains_key("traces") && pipelines.contains_key("metrics"));
    for (name, pipeline) in pipelines {
        let list = |key: &str| -> Vec<String> {
            pipeline[key]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        for r in list("receivers") {
            assert!(
                receivers.contains(&r) || connectors.contains(&r),
                "{name:?}: {r}"
            );
        }
        for p in list("processors") {
            assert!(processors.contains(&p), "{name:?}: {p}");
        }
        for e in list("exporters") {
            assert!(
                exporters.contains(&e) || connectors.contains(&e),
                "{name:?}: {e}"
            );
        }
    }
    let compose = Compose::load(&["docker-compose.yml"]);
    let jaeger = collector["exporters"]["otlp/jaeger"]["endpoint"]
        .as_str()
        .unwrap();
    let host = jaeger.split(':').next().unwrap();
    assert!(
        compose.services.contains_key(host),
        "collector exports to {jaeger}"
    );
    assert_eq!(
        collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
        Some("0.0.0.0:4317"),
        "services export to otel-collector:4317 over grpc"
    );
}

#[test]
fn every_grafana_panel_queries_metrics_the_code_or_the_collector_emits() {
    let mut known = emitted_metrics();
    // The collector's span metrics: `<namespace>_calls_total` and the
    // duration histogram, with the namespace from its config.
    let collector = yaml("deploy/otel-collector/config.yaml");
    let namespace = collector["connectors"]["spanmetrics"]["namespace"]
        .as_str()
        .unwrap()
        .replace('.', "_");
    known.insert(format!("{namespace}_calls_total"));
    for suffix in ["bucket", "sum", "count"] {
        known.insert(format!("{namespace}_duration_milliseconds_{suffix}"));
    }
    assert!(known.contains("waiter_stage_seconds_bucket"), "{known:?}");

    let sources = yaml("deploy/grafana/provisioning/datasources/datasources.yaml");
    let uids: BTreeSet<String> = sources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap().to_string())
        .collect();
    let provider = yaml("deploy/grafana/provisioning/dashboards/dashboards.yaml");
    let dashboards_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let compose = Compose::load(&["docker-compose.yml"]);
    assert!(
        compose.services["grafana"]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v
                .as_str()
                .unwrap()
                .contains(&format!("./deploy/grafana/dashboards:{dashboards_path}"))),
        "the dashboards folder is mounted where the provider reads"
    );

    let mut titles = Vec::new();
    for entry in std::fs::read_dir(root().join("deploy/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        titles.push(dashboard["title"].as_str().unwrap().to_string());
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap();
            let uid = panel["datasource"]["uid"].as_str().unwrap();
            assert!(uids.contains(uid), "{title}: data source `{uid}`");
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title} has no query");
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                let names = promql_metric_names(expr);
                assert!(!names.is_empty(), "{title}: no metric in `{expr}`");
                for name in names {
                    assert!(
                        known.contains(&name),
                        "{}: panel `{title}` queries `{name}`, which nothing emits",
                        path.display()
                    );
                }
            }
        }
    }
    titles.sort();
    assert_eq!(titles, ["tenants", "waiter pipeline"]);
}

#[test]
fn the_promql_reader_finds_metric_names_and_nothing_else() {
    let names = promql_metric_names(
        r#"histogram_quantile(0.99, sum by (le, stage) (rate(waiter_stage_seconds_bucket{variant="a b",x=~"y"}[1m]))) / on (x) group_left sum without (y) (up) > bool 2"#,
    );
    assert_eq!(names, ["up", "waiter_stage_seconds_bucket"]);
}

#[test]
fn kubernetes_manifests_resolve_and_line_up_with_the_binaries() {
    let binaries = Binaries::discover();
    let all = Kustomization::all();
    assert!(all.iter().any(|k| k.dir.ends_with("base")));
    assert!(all.iter().any(|k| k.dir.ends_with("tenants/123")));
    for kustomization in &all {
        let here = kustomization.dir.display().to_string();
        let objects = kustomization.render();
        let names: BTreeSet<(String, String)> = objects
            .iter()
            .map(|o| (files::kind(o), files::name(o)))
            .collect();
        let services: BTreeMap<String, Value> = objects
            .iter()
            .filter(|o| files::kind(o) == "Service")
            .map(|o| (files::name(o), o.clone()))
            .collect();
        for container in kustomization.containers() {
            let wherein = format!("{here}: {}", container.name);
            assert!(
                container.value["resources"]["limits"]["memory"].is_string(),
                "{wherein} has no memory limit"
            );
            let mut environment = container.environment();
            for helper in container.helper_variables() {
                environment.remove(&helper);
            }
            // Every reference to a config map or secret resolves.
            for (kind, name) in container.references() {
                let resolves = names.contains(&(kind.clone(), name.clone()))
                    || kustomization
                        .base_names()
                        .contains(&(kind.clone(), name.clone()));
                assert!(resolves, "{wherein} refers to {kind} `{name}`");
            }
            if container.value["image"].as_str() != Some("waiter-bus") {
                continue;
            }
            let binary = files::command_binary(&container.value["command"]).unwrap();
            if !binaries.is_service(&binary) {
                continue;
            }
            check_environment(&binaries, &binary, &environment, &wherein);
            let port = binaries.default_port(&binary);
            assert_eq!(
                container.value["ports"][0]["containerPort"].as_u64(),
                Some(port.into()),
                "{wherein}"
            );
            assert_eq!(
                container.value["readinessProbe"]["httpGet"]["port"].as_u64(),
                Some(port.into()),
                "{wherein}"
            );
            // Its Service (same name) sends traffic where it listens.
            let service = services
                .get(&container.owner)
                .unwrap_or_else(|| panic!("{wherein} has no Service"));
            assert_eq!(
                service["spec"]["ports"][0]["targetPort"].as_u64(),
                Some(port.into()),
                "{wherein}'s Service"
            );
            for (key, value) in service["spec"]["selector"].as_mapping().unwrap() {
                assert_eq!(
                    container
                        .labels
                        .get(key.as_str().unwrap())
                        .map(String::as_str),
                    value.as_str(),
                    "{wherein}: the Service selects {key:?}"
                );
            }
            // Addresses name Services of this or the base kustomization on
            // their ports.
            for (variable, value) in &environment {
                if let Some((host, port)) = files::http_address(value) {
                    let known = kustomization.all_services();
                    let listening = known.get(&host).unwrap_or_else(|| {
                        panic!("{wherein}: {variable}={value} names no Service")
                    });
                    assert_eq!(*listening, port, "{wherein}: {variable}={value}");
                }
            }
        }
    }
}

#[test]
fn a_tenant_overlay_sets_the_label_the_group_and_registers_the_tenant() {
    let dir = std::env::temp_dir().join(format!("new-tenant-{}", uuid::Uuid::new_v4().simple()));
    let generated = dir.join("456");
    let status = std::process::Command::new("sh")
        .arg(root().join("deploy/k8s/new-tenant.sh"))
        .arg("456")
        .arg(&generated)
        .status()
        .unwrap();
    assert!(status.success());
    let refused = std::process::Command::new("sh")
        .arg(root().join("deploy/k8s/new-tenant.sh"))
        .arg("45 6")
        .arg(dir.join("bad"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("letters, digits"));

    for (tenant, kustomization) in [
        (
            "123",
            Kustomization::load(&root().join("deploy/k8s/tenants/123")),
        ),
        ("456", Kustomization::load(&generated)),
    ] {
        let label = format!("sbx-{tenant}");
        let objects = kustomization.render();
        let names: BTreeSet<String> = objects.iter().map(files::name).collect();
        for expected in ["dispatch", "waiter", "register-tenant"] {
            assert!(names.contains(&format!("{expected}-{label}")), "{names:?}");
        }
        for object in &objects {
            let labels = files::pod_labels(object);
            if !labels.is_empty() {
                assert_eq!(
                    labels.get("waiter-bus/variant").map(String::as_str),
                    Some(label.as_str())
                );
                assert_eq!(
                    labels.get("waiter-bus/tenant").map(String::as_str),
                    Some(tenant)
                );
            }
        }
        let waiter = kustomization.container_of(&format!("waiter-{label}"));
        let environment = waiter.environment();
        assert_eq!(environment["WAITER_BUS__SERVICE__VARIANT"], label);
        assert_eq!(
            environment["WAITER_BUS__WAITER__GROUP_ID"],
            format!("waiter-{label}")
        );
        let register = kustomization.container_of(&format!("register-tenant-{label}"));
        let register_environment = register.environment();
        assert_eq!(register_environment["TENANT"], tenant);
        assert!(
            register.value["args"][0]
                .as_str()
                .unwrap()
                .contains("PUT \"http://tenants:8085/tenants/$TENANT\""),
            "the job maps the tenant"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_cargo_run_in_the_readme_names_a_binary_cargo_can_pick() {
    let binaries = Binaries::discover();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let commands: Vec<&str> = readme
        .lines()
        // In prose the command ends at its closing backtick.
        .filter_map(|line| {
            line.find("cargo run")
                .map(|at| line[at..].split('`').next().unwrap())
        })
        .collect();
    assert!(commands.len() >= 5, "{commands:?}");
    for command in commands {
        let words: Vec<&str> = command
            .split_whitespace()
            .take_while(|w| *w != "--")
            .collect();
        let package = words
            .windows(2)
            .find(|w| w[0] == "-p")
            .map(|w| w[1])
            .unwrap_or_else(|| panic!("`{command}` names no package"));
        match words.windows(2).find(|w| w[0] == "--bin") {
            Some(bin) => assert!(binaries.exists(bin[1]), "`{command}`: no binary {}", bin[1]),
            None => assert!(
                binaries.runs_without_bin(package),
                "`{command}`: cargo cannot tell which of {package}'s binaries to run"
            ),
        }
    }
}

/// Every compose file, as `docker compose` would read it: the Compose
/// Specification's own JSON schema (vendored in `deploy/schema`), after YAML
/// merge keys are applied.
#[test]
fn every_compose_file_passes_the_compose_specification_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/schema/compose-spec.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft7::new(&schema).expect("the Compose schema compiles");
    let mut files = vec!["docker-compose.yml".to_string()];
    for entry in std::fs::read_dir(root().join("deploy/compose")).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            files.push(format!(
                "deploy/compose/{}",
                path.file_name().unwrap().to_str().unwrap()
            ));
        }
    }
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        let document: serde_json::Value = serde_json::to_value(yaml(file)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("  at {}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{file} is not a valid Compose file:\n{}",
            errors.join("\n")
        );
    }
}

/// A schema that accepted anything would make the test above pass on any
/// file: the broken command that once shipped in the tenant overlay (an
/// unquoted `authorization: Bearer …` read as a mapping) must be refused.
#[test]
fn the_compose_schema_refuses_a_command_that_yaml_reads_as_a_mapping() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/schema/compose-spec.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft7::new(&schema).unwrap();
    let broken: serde_yaml::Value = serde_yaml::from_str(
        "services:\n  job:\n    image: x\n    command:\n      - curl -X DELETE http://tenants:8085/tenants/1 -H \"authorization: Bearer $$TOKEN\"\n",
    )
    .unwrap();
    assert!(
        !validator.is_valid(&serde_json::to_value(broken).unwrap()),
        "the schema accepted a mapping as a command"
    );
}

/// `kafka-dev --apache`, compose and Kubernetes run the same Kafka: the
/// version the checked-in Maven file resolves is every `apache/kafka` image tag.
#[test]
fn every_apache_kafka_image_is_the_version_kafka_dev_runs() {
    let version = embedded_kafka::apache::version();
    let mut images = Vec::new();
    for file in ["docker-compose.yml", "deploy/k8s/base/kafka.yaml"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for line in text.lines() {
            if let Some((_, tag)) = line.trim().split_once("image: apache/kafka:") {
                images.push((file, tag.trim().to_string()));
            }
        }
    }
    assert!(images.len() >= 3, "{images:?}");
    for (file, tag) in images {
        assert_eq!(
            tag, version,
            "{file} runs apache/kafka:{tag}, kafka-dev {version}"
        );
    }
}

/// The published gateway believes tenant baggage only from callers with its
/// token, and the ledger's writes need a token the waiters present, in
/// Compose and in Kubernetes alike.
#[test]
fn the_published_edge_believes_no_one_and_ledger_writes_need_a_token() {
    let compose = Compose::load(&["docker-compose.yml", "deploy/compose/tenant.yml"]);
    let env = |service: &str| files::compose_environment(&compose.services[service]["environment"]);
    let gateway = env("gateway");
    assert_eq!(
        gateway["WAITER_BUS__GATEWAY__TRUST_INCOMING_BAGGAGE"],
        "false"
    );
    assert!(gateway.contains_key("WAITER_BUS__GATEWAY__BAGGAGE_TOKEN"));
    let token = &env("ledger")["WAITER_BUS__LEDGER__TOKEN"];
    for waiter in ["waiter", "waiter-tenant"] {
        assert_eq!(&env(waiter)["WAITER_BUS__LEDGER__TOKEN"], token, "{waiter}");
    }

    let kustomization = Kustomization::load(&root().join("deploy/k8s/base"));
    let gateway = kustomization.container_of("gateway").environment();
    assert_eq!(
        gateway["WAITER_BUS__GATEWAY__TRUST_INCOMING_BAGGAGE"],
        "false"
    );
    for owner in ["ledger", "waiter"] {
        let environment = kustomization.container_of(owner).environment();
        assert!(
            environment.contains_key("WAITER_BUS__LEDGER__TOKEN"),
            "{owner} has the ledger token"
        );
    }
}

#[test]
fn the_low_latency_profile_is_a_settings_file_the_waiter_and_dispatch_accept() {
    let profile = files::root().join("config/low-latency.yaml");
    let waiter: waiter::Settings =
        settings::load_service(waiter::settings::DEFAULTS, Some(&profile)).unwrap();
    let dispatch: dispatch::Settings =
        settings::load_service(dispatch::DEFAULTS, Some(&profile)).unwrap();
    for (service, kafka) in [("waiter", &waiter.kafka), ("dispatch", &dispatch.kafka)] {
        assert_eq!(
            kafka.producer.get("linger.ms").map(String::as_str),
            Some("0"),
            "{service}"
        );
        assert_eq!(
            kafka.client.get("socket.nagle.disable").map(String::as_str),
            Some("true"),
            "{service}"
        );
    }
    // The waiter's other defaults stay: the profile changes client settings only.
    let defaults: waiter::Settings =
        settings::load_service(waiter::settings::DEFAULTS, None).unwrap();
    assert_eq!(waiter.waiter.waiters, defaults.waiter.waiters);
    assert_eq!(
        waiter.kafka.consumer.get("session.timeout.ms"),
        defaults.kafka.consumer.get("session.timeout.ms")
    );
}
