//! Reading the deployment files the way compose and kustomize would, far
//! enough to check them: YAML merge keys, overlays, name suffixes, labels,
//! generated config maps and `$(VAR)` expansion.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A YAML file of the repository, merge keys applied.
pub fn yaml(path: &str) -> Value {
    parse_yaml(&root().join(path))
}

fn parse_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    value.apply_merge().unwrap();
    value
}

/// Every document of a multi-document YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            let mut value =
                Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            value.apply_merge().unwrap();
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

/// The services of one or more compose files, later files overriding.
pub struct Compose {
    pub services: BTreeMap<String, Value>,
}

impl Compose {
    pub fn load(files: &[&str]) -> Self {
        let mut services = BTreeMap::new();
        for file in files {
            let document = yaml(file);
            for (name, service) in document["services"].as_mapping().unwrap() {
                services.insert(name.as_str().unwrap().to_string(), service.clone());
            }
        }
        Self { services }
    }

    /// Services running the project's image.
    pub fn project_services(&self) -> Vec<(String, Value)> {
        self.services
            .iter()
            .filter(|(_, s)| s["image"].as_str() == Some("waiter-bus:dev"))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }
}

/// Names a compose service depends on (list or map form).
pub fn depends_on(service: &Value) -> Vec<String> {
    match &service["depends_on"] {
        Value::Sequence(list) => list
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        Value::Mapping(map) => map
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// A compose `environment` (map or `KEY=VALUE` list), interpolated with
/// defaults the way `${NAME:-default}` reads when NAME is unset.
pub fn compose_environment(environment: &Value) -> BTreeMap<String, String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    let mut out = BTreeMap::new();
    match environment {
        Value::Mapping(map) => {
            for (k, v) in map {
                out.insert(k.as_str().unwrap().to_string(), interpolate(&scalar(v)));
            }
        }
        Value::Sequence(list) => {
            for item in list {
                let (k, v) = item.as_str().unwrap().split_once('=').unwrap();
                out.insert(k.to_string(), interpolate(v));
            }
        }
        _ => {}
    }
    out
}

fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `http://host:port…` → (host, port).
pub fn http_address(value: &str) -> Option<(String, u16)> {
    let rest = value.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.split_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

/// The program a `command` runs (exec form).
pub fn command_binary(command: &Value) -> Option<String> {
    command.as_sequence()?.first()?.as_str().map(str::to_string)
}

/// The program a compose service runs: its entrypoint's, else its command's.
pub fn compose_binary(service: &Value) -> Option<String> {
    command_binary(&service["entrypoint"]).or_else(|| command_binary(&service["command"]))
}

/// The binaries the Dockerfile's `cargo build` line builds.
pub fn dockerfile_binaries() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    let built: BTreeSet<String> = words
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].to_string())
        .collect();
    for binary in &built {
        assert!(
            text.contains(&format!("target/release/{binary}")),
            "the Dockerfile builds `{binary}` but does not copy it into the image"
        );
    }
    built
}

/// The workspace's binaries and the services' default settings.
pub struct Binaries {
    all: BTreeSet<String>,
    /// Package → (its binaries, whether it names a `default-run`).
    packages: BTreeMap<String, (Vec<String>, bool)>,
    defaults: BTreeMap<String, Value>,
}

impl Binaries {
    /// The services, each with `services/<name>/config/base.yaml`.
    pub const SERVICES: &'static [&'static str] = &[
        "gateway", "dispatch", "waiter", "ledger", "tenants", "console",
    ];

    pub fn discover() -> Self {
        let mut packages = BTreeMap::new();
        let mut crates = Vec::new();
        for group in ["services", "shared"] {
            for entry in std::fs::read_dir(root().join(group)).unwrap() {
                crates.push(entry.unwrap().path());
            }
        }
        crates.push(root().join("load"));
        crates.push(root().join("demo"));
        for dir in crates {
            let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
                continue;
            };
            let (package, mut bins) = manifest_names(&manifest);
            if dir.join("src/main.rs").exists() {
                bins.push(package.clone());
            }
            if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
                for bin in entries {
                    let path = bin.unwrap().path();
                    bins.push(path.file_stem().unwrap().to_string_lossy().into_owned());
                }
            }
            let default_run = manifest
                .lines()
                .any(|l| l.trim_start().starts_with("default-run"));
            packages.insert(package, (bins, default_run));
        }
        let all = packages
            .values()
            .flat_map(|(bins, _)| bins.clone())
            .collect();
        let defaults = Self::SERVICES
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    yaml(&format!("services/{s}/config/base.yaml")),
                )
            })
            .collect();
        Self {
            all,
            packages,
            defaults,
        }
    }

    /// Whether `cargo run -p package` (no `--bin`) knows what to run: the
    /// package exists and has one binary, or names its default.
    pub fn runs_without_bin(&self, package: &str) -> bool {
        self.packages
            .get(package)
            .is_some_and(|(bins, default_run)| {
                bins.len() == 1 || (*default_run && !bins.is_empty())
            })
    }

    pub fn exists(&self, binary: &str) -> bool {
        self.all.contains(binary)
    }

    pub fn is_service(&self, binary: &str) -> bool {
        self.defaults.contains_key(binary)
    }

    /// The dotted setting a `WAITER_BUS__A__B` variable sets (`a.b`).
    pub fn setting_for(&self, _binary: &str, variable: &str) -> Option<String> {
        let path = variable.strip_prefix("WAITER_BUS__")?;
        Some(
            path.split("__")
                .collect::<Vec<_>>()
                .join(".")
                .to_lowercase(),
        )
    }

    /// Whether `binary`'s settings have the dotted `key`; librdkafka
    /// property maps (`kafka.client/consumer/producer`) take any key.
    pub fn has_setting(&self, binary: &str, key: &str) -> bool {
        let mut node = &self.defaults[binary];
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if i == 2
                && parts[0] == "kafka"
                && ["client", "consumer", "producer"].contains(&parts[1])
            {
                return true;
            }
            match node.as_mapping().and_then(|m| m.get(*part)) {
                Some(next) => node = next,
                None => return false,
            }
        }
        true
    }

    pub fn default_port(&self, binary: &str) -> u16 {
        self.defaults[binary]["http"]["port"].as_u64().unwrap() as u16
    }
}

/// The package name and the `[[bin]]` names of a Cargo manifest.
fn manifest_names(manifest: &str) -> (String, Vec<String>) {
    let mut section = "";
    let mut package = String::new();
    let mut bins = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let Some(value) = line.strip_prefix("name").map(str::trim_start) else {
            continue;
        };
        let Some(value) = value.strip_prefix('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match section {
            "[package]" => package = value,
            "[[bin]]" => bins.push(value),
            _ => {}
        }
    }
    (package, bins)
}

/// The string literal names given to `counter!(`, `gauge!(`, `histogram!(`.
fn recorded_names(text: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (kind, opener) in [
        ("counter", "counter!("),
        ("counter", "counter_at_zero("),
        ("gauge", "gauge!("),
        ("histogram", "histogram!("),
    ] {
        for (at, _) in text.match_indices(opener) {
            let rest = text[at + opener.len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"')
                && let Some(end) = literal.find('"')
            {
                out.push((kind, literal[..end].to_string()));
            }
        }
    }
    // Names kept in constants (`const REPLIES_LATE: &str = "…_total";`)
    // and recorded through them.
    for line in text.lines().filter(|l| l.contains("const ")) {
        let Some((_, rest)) = line.split_once(": &str = \"") else {
            continue;
        };
        let Some((name, _)) = rest.split_once('"') else {
            continue;
        };
        let metric_like = name.contains('_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if metric_like {
            let kind = match name.ends_with("_seconds") {
                true => "histogram",
                false => "counter",
            };
            out.push((kind, name.to_string()));
        }
    }
    out
}

/// Every metric name the code records, with the series names Prometheus
/// gives a histogram.
pub fn emitted_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![
        root().join("services"),
        root().join("shared"),
        root().join("load"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("tests") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (kind, name) in recorded_names(&text) {
                    if kind == "histogram" {
                        for suffix in ["bucket", "sum", "count"] {
                            names.insert(format!("{name}_{suffix}"));
                        }
                    }
                    names.insert(name);
                }
            }
        }
    }
    names
}

/// The metric names a PromQL expression reads: identifiers that are not
/// functions, keywords, label names or inside strings and selectors.
pub fn promql_metric_names(expr: &str) -> Vec<String> {
    // Modifiers followed by a parenthesised list of labels, not metrics.
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["offset", "bool", "and", "or", "unless"];
    // Aggregations may put `by (…)` between their name and their argument.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut text = String::new();
    let mut depth_braces = 0;
    let mut depth_brackets = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => depth_brackets += 1,
            ']' => depth_brackets -= 1,
            _ if depth_braces > 0 || depth_brackets > 0 => {}
            _ => text.push(c),
        }
        if matches!(c, '{' | '[') {
            text.push(' ');
        }
    }
    let tokens: Vec<(String, char)> = {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..]
                    .iter()
                    .find(|c| !c.is_whitespace())
                    .copied()
                    .unwrap_or(' ');
                out.push((word, next));
            } else if chars[i].is_ascii_digit() || chars[i] == '.' {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            } else {
                out.push((chars[i].to_string(), ' '));
                i += 1;
            }
        }
        out
    };
    let mut names = BTreeSet::new();
    let mut skip_group = false;
    let mut depth_group = 0;
    for (token, next) in tokens {
        if skip_group {
            match token.as_str() {
                "(" => depth_group += 1,
                ")" => {
                    depth_group -= 1;
                    if depth_group == 0 {
                        skip_group = false;
                    }
                }
                _ => {}
            }
            continue;
        }
        if GROUPING.contains(&token.as_str()) {
            skip_group = next == '(';
            continue;
        }
        let first = token.chars().next().unwrap();
        if !(first.is_ascii_alphabetic() || first == '_')
            || KEYWORDS.contains(&token.as_str())
            || AGGREGATIONS.contains(&token.as_str())
            || next == '('
        {
            continue;
        }
        names.insert(token);
    }
    names.into_iter().collect()
}

/// A container of a rendered workload, with what it was rendered from.
pub struct Container {
    /// Workload name (after any suffix).
    pub owner: String,
    pub name: String,
    pub value: Value,
    /// The pod template's labels.
    pub labels: BTreeMap<String, String>,
    /// Literal values of config maps generated alongside, by name.
    generated: BTreeMap<String, BTreeMap<String, String>>,
}

impl Container {
    /// Its `env`, with config-map values from generated maps and `$(VAR)`
    /// expanded from earlier entries, as the kubelet does.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for entry in self.value["env"].as_sequence().into_iter().flatten() {
            let name = entry["name"].as_str().unwrap().to_string();
            let value = if let Some(v) = entry["value"].as_str() {
                let mut v = v.to_string();
                while let Some(start) = v.find("$(") {
                    let end = v[start..].find(')').unwrap() + start;
                    let var = &v[start + 2..end];
                    let replacement = out
                        .get(var)
                        .unwrap_or_else(|| {
                            panic!("{}: `{name}` uses $({var}) before it is set", self.name)
                        })
                        .clone();
                    v.replace_range(start..=end, &replacement);
                }
                v
            } else if let Some(reference) = entry["valueFrom"]["configMapKeyRef"].as_mapping() {
                let map = reference["name"].as_str().unwrap();
                let key = reference["key"].as_str().unwrap();
                self.generated
                    .get(map)
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_else(|| format!("<{map}.{key}>"))
            } else {
                format!("<{name}>")
            };
            out.insert(name, value);
        }
        out
    }

    /// Variables set only to be expanded into others as `$(NAME)`.
    pub fn helper_variables(&self) -> BTreeSet<String> {
        let values: Vec<&str> = self.value["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|e| e["value"].as_str())
            .collect();
        self.value["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .filter(|name| values.iter().any(|v| v.contains(&format!("$({name})"))))
            .map(str::to_string)
            .collect()
    }

    /// (kind, name) of every config map and secret it refers to.
    pub fn references(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for from in self.value["envFrom"].as_sequence().into_iter().flatten() {
            if let Some(name) = from["configMapRef"]["name"].as_str() {
                out.push(("ConfigMap".into(), name.into()));
            }
            if let Some(name) = from["secretRef"]["name"].as_str() {
                out.push(("Secret".into(), name.into()));
            }
        }
        for entry in self.value["env"].as_sequence().into_iter().flatten() {
            if let Some(name) = entry["valueFrom"]["configMapKeyRef"]["name"].as_str() {
                out.push(("ConfigMap".into(), name.into()));
            }
            if let Some(name) = entry["valueFrom"]["secretKeyRef"]["name"].as_str() {
                out.push(("Secret".into(), name.into()));
            }
        }
        out
    }
}

pub fn kind(object: &Value) -> String {
    object["kind"].as_str().unwrap_or_default().to_string()
}

pub fn name(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A workload's pod template labels (empty for other kinds).
pub fn pod_labels(object: &Value) -> BTreeMap<String, String> {
    object["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A kustomization, rendered far enough to check: resources (files and
/// kustomization folders), `nameSuffix`, `labels` and `configMapGenerator`.
pub struct Kustomization {
    pub dir: PathBuf,
    document: Value,
}

impl Kustomization {
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("kustomization.yaml");
        assert!(path.exists(), "{} has no kustomization.yaml", dir.display());
        Self {
            dir: dir.to_path_buf(),
            document: parse_yaml(&path),
        }
    }

    /// The base and every tenant overlay.
    pub fn all() -> Vec<Self> {
        let k8s = root().join("deploy/k8s");
        let mut out = vec![Self::load(&k8s.join("base"))];
        for entry in std::fs::read_dir(k8s.join("tenants")).unwrap() {
            out.push(Self::load(&entry.unwrap().path()));
        }
        out
    }

    fn suffix(&self) -> String {
        self.document["nameSuffix"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn generated(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for generator in self.document["configMapGenerator"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let literals = generator["literals"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|l| {
                    let (k, v) = l.as_str().unwrap().split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            out.insert(generator["name"].as_str().unwrap().to_string(), literals);
        }
        out
    }

    /// The objects it produces, names suffixed and labels applied.
    pub fn render(&self) -> Vec<Value> {
        let suffix = self.suffix();
        let mut objects = Vec::new();
        for resource in self.document["resources"].as_sequence().unwrap() {
            let path = self.dir.join(resource.as_str().unwrap());
            assert!(
                path.exists(),
                "{}: resource {} does not exist",
                self.dir.display(),
                path.display()
            );
            if path.is_dir() {
                objects.extend(Self::load(&path).render());
            } else {
                objects.extend(yaml_documents(&path));
            }
        }
        let labels: Vec<(Value, Value)> = self.document["labels"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|l| l["pairs"].as_mapping().unwrap().clone())
            .collect();
        let local: BTreeSet<String> = objects.iter().map(name).collect();
        for object in &mut objects {
            let renamed = format!("{}{suffix}", name(object));
            object["metadata"]["name"] = Value::String(renamed);
            for (key, value) in &labels {
                let places: [&[&str]; 2] = [
                    &["spec", "selector", "matchLabels"],
                    &["spec", "template", "metadata", "labels"],
                ];
                for path in places {
                    let mut place = &mut *object;
                    for step in path {
                        place = &mut place[*step];
                    }
                    if let Value::Mapping(map) = place {
                        map.insert(key.clone(), value.clone());
                    }
                }
                if kind(object) == "Service"
                    && let Value::Mapping(map) = &mut object["spec"]["selector"]
                {
                    map.insert(key.clone(), value.clone());
                }
            }
            // References to objects of this kustomization follow the rename;
            // generated maps too (kustomize adds a hash; the name is enough here).
            let generated = self.generated();
            rename_references(object, &|n: &str| {
                if local.contains(n) || generated.contains_key(n) {
                    format!("{n}{suffix}")
                } else {
                    n.to_string()
                }
            });
        }
        for generated in self.generated().keys() {
            objects.push(
                serde_yaml::from_str(&format!(
                    "{{kind: ConfigMap, metadata: {{name: {generated}{suffix}}}}}"
                ))
                .unwrap(),
            );
        }
        objects
    }

    /// The container of the workload named `owner`.
    pub fn container_of(&self, owner: &str) -> Container {
        self.containers()
            .into_iter()
            .find(|c| c.owner == owner)
            .unwrap_or_else(|| panic!("no workload `{owner}`"))
    }

    /// Containers of every workload it renders.
    pub fn containers(&self) -> Vec<Container> {
        let suffix = self.suffix();
        let generated: BTreeMap<String, BTreeMap<String, String>> = self
            .generated()
            .into_iter()
            .map(|(n, m)| (format!("{n}{suffix}"), m))
            .collect();
        let mut out = Vec::new();
        for object in self.render() {
            let labels = pod_labels(&object);
            for container in object["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                out.push(Container {
                    owner: name(&object),
                    name: format!("{}/{}", name(&object), container["name"].as_str().unwrap()),
                    value: container.clone(),
                    labels: labels.clone(),
                    generated: generated.clone(),
                });
            }
        }
        out
    }

    /// Containers running the project's image.
    pub fn project_containers(&self) -> Vec<Container> {
        self.containers()
            .into_iter()
            .filter(|c| c.value["image"].as_str() == Some("waiter-bus"))
            .collect()
    }

    /// (kind, name) of the base's objects, which overlays may refer to.
    pub fn base_names(&self) -> BTreeSet<(String, String)> {
        Self::load(&root().join("deploy/k8s/base"))
            .render()
            .iter()
            .map(|o| (kind(o), name(o)))
            .collect()
    }

    /// Service name → port, of the base and of this kustomization.
    pub fn all_services(&self) -> BTreeMap<String, u16> {
        let mut out = BTreeMap::new();
        for object in Self::load(&root().join("deploy/k8s/base"))
            .render()
            .into_iter()
            .chain(self.render())
        {
            if kind(&object) == "Service" {
                out.insert(
                    name(&object),
                    object["spec"]["ports"][0]["port"].as_u64().unwrap() as u16,
                );
            }
        }
        out
    }
}

fn rename_references(object: &mut Value, rename: &dyn Fn(&str) -> String) {
    match object {
        Value::Mapping(map) => {
            for key in [
                "configMapKeyRef",
                "configMapRef",
                "secretKeyRef",
                "secretRef",
            ] {
                if let Some(Value::Mapping(reference)) = map.get_mut(key)
                    && let Some(Value::String(n)) = reference.get_mut("name")
                {
                    *n = rename(n);
                }
            }
            for (_, value) in map.iter_mut() {
                rename_references(value, rename);
            }
        }
        Value::Sequence(list) => {
            for value in list {
                rename_references(value, rename);
            }
        }
        _ => {}
    }
}
