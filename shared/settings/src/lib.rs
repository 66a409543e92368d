//! Typed, layered settings for every waiter-bus service.
//!
//! Start with [`Loader`]: a service hands it the YAML defaults it ships
//! (`include_str!("../config/base.yaml")`), and [`Loader::load`] layers, from
//! lowest to highest precedence:
//!
//! 1. the checked-in defaults;
//! 2. an optional file named by [`Loader::file`] (the services pass
//!    `--config` or `WAITER_BUS_CONFIG`);
//! 3. environment overrides `WAITER_BUS__SECTION__KEY=value` (double
//!    underscore between levels, values parsed as YAML scalars);
//! 4. `KAFKA_BOOTSTRAP_SERVERS`, which every Kafka-speaking service honours as
//!    `kafka.bootstrap_servers`.
//!
//! Durations are written as durations (`10s`, `500ms`, `5m`: fields marked
//! `#[serde(with = "settings::duration")]`), counts that must not be zero
//! are `NonZero*`, and credentials are [`Secret`]s, which `Debug` never
//! prints.
//!
//! Settings structs use `#[serde(deny_unknown_fields)]`, so a misspelt or
//! wrong-typed key is a start-up error that names the key and the layer it
//! came from, never a silently ignored value.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

/// Prefix of environment overrides: `WAITER_BUS__PIPELINE__WAITERS=100`.
pub const ENV_PREFIX: &str = "WAITER_BUS";
/// Environment variable naming an optional settings file.
pub const CONFIG_FILE_ENV: &str = "WAITER_BUS_CONFIG";
/// The standard bootstrap variable every Kafka-speaking service honours.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";

/// Why settings could not be loaded. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A layer could not be read or parsed at all (bad YAML, missing file).
    #[error("settings: cannot read {layer}: {reason}")]
    Layer {
        /// Which layer: `defaults`, a file path, or `environment`.
        layer: String,
        /// The parser's reason.
        reason: String,
    },
    /// A key is unknown, missing or of the wrong type.
    #[error("settings: key `{key}`: {reason}")]
    Key {
        /// Dotted path of the offending key, e.g. `pipeline.waiters`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// `#[serde(with = "settings::duration")]`: a `Duration` written as a
/// humantime string (`250ms`, `10s`, `5m`, `1h 30m`).
pub mod duration {
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    pub use humantime_serde::serialize;

    /// Reads `10s`, `250ms`, `5m`, `1h 30m`; a bare number is refused with
    /// a hint to add its unit (a silent default unit is how `30` seconds
    /// becomes 30 milliseconds).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    /// An optional duration: absent or `null` is `None`.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        #[derive(Deserialize)]
        struct Present(#[serde(with = "super")] Duration);

        /// Reads what [`super::deserialize`] reads, or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<Present>::deserialize(deserializer)?.map(|p| p.0))
        }
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration with its unit, such as 500ms, 10s or 5m")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text).map_err(|e| {
                E::custom(format!(
                    "`{text}` is not a duration ({e}); write it with its unit, such as 500ms, 10s or 5m"
                ))
            })
        }

        fn visit_u64<E: de::Error>(self, number: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "`{number}` has no unit; write it with its unit, such as {number}ms or {number}s"
            )))
        }

        fn visit_i64<E: de::Error>(self, number: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "`{number}` has no unit; write it with its unit, such as 500ms, 10s or 5m"
            )))
        }
    }
}

/// A credential from settings: deserialised like a string, never printed by
/// `Debug` (settings are logged at start-up and appear in panics).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A service's settings: its checked-in `defaults`, then `file` (or
/// `WAITER_BUS_CONFIG`), then `WAITER_BUS__…` variables; when the
/// defaults have a `kafka` section, `KAFKA_BOOTSTRAP_SERVERS` sets its
/// `bootstrap_servers`.
pub fn load_service<T: DeserializeOwned>(
    defaults: &str,
    file: Option<&Path>,
) -> Result<T, SettingsError> {
    let loader = Loader::new(defaults).file(file);
    match defaults.lines().any(|line| line.starts_with("kafka:")) {
        true => loader.kafka_section("kafka").load(),
        false => loader.load(),
    }
}

/// Builds one service's settings from its layers.
#[derive(Debug, Clone)]
pub struct Loader {
    defaults: String,
    file: Option<PathBuf>,
    kafka_section: Option<String>,
    environment: Option<Vec<(String, String)>>,
}

impl Loader {
    /// A loader whose lowest layer is `defaults_yaml`.
    pub fn new(defaults_yaml: impl Into<String>) -> Self {
        Self {
            defaults: defaults_yaml.into(),
            file: None,
            kafka_section: None,
            environment: None,
        }
    }

    /// Adds a YAML file layer above the defaults.
    pub fn file(mut self, path: Option<impl AsRef<Path>>) -> Self {
        self.file = path.map(|p| p.as_ref().to_path_buf());
        self
    }

    /// Names the section whose `bootstrap_servers` `KAFKA_BOOTSTRAP_SERVERS` sets.
    pub fn kafka_section(mut self, section: &str) -> Self {
        self.kafka_section = Some(section.to_string());
        self
    }

    /// Uses these variables instead of the process environment (for tests,
    /// which must not mutate a shared environment).
    pub fn environment<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.environment = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Loads and checks the settings.
    pub fn load<T: DeserializeOwned>(self) -> Result<T, SettingsError> {
        let vars: Vec<(String, String)> = match self.environment {
            Some(vars) => vars,
            None => std::env::vars().collect(),
        };
        let mut builder =
            Config::builder().add_source(File::from_str(&self.defaults, FileFormat::Yaml));
        let defaults_check = Config::builder()
            .add_source(File::from_str(&self.defaults, FileFormat::Yaml))
            .build();
        if let Err(e) = defaults_check {
            return Err(SettingsError::Layer {
                layer: "defaults".into(),
                reason: e.to_string(),
            });
        }
        let file = self.file.clone().or_else(|| {
            vars.iter()
                .find(|(k, _)| k == CONFIG_FILE_ENV)
                .map(|(_, v)| PathBuf::from(v))
        });
        if let Some(path) = &file {
            if !path.is_file() {
                return Err(SettingsError::Layer {
                    layer: path.display().to_string(),
                    reason: "no such file".into(),
                });
            }
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Yaml));
        }
        let source: config::Map<String, String> = vars
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .cloned()
            .collect();
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(source)),
        );
        if let Some(section) = &self.kafka_section {
            let bootstrap = vars
                .iter()
                .find(|(k, v)| k == BOOTSTRAP_ENV && !v.is_empty())
                .map(|(_, v)| v.clone());
            builder = builder
                .set_override_option(format!("{section}.bootstrap_servers"), bootstrap)
                .map_err(|e| SettingsError::Layer {
                    layer: BOOTSTRAP_ENV.into(),
                    reason: e.to_string(),
                })?;
        }
        let merged = builder.build().map_err(|e| SettingsError::Layer {
            layer: file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "environment".into()),
            reason: e.to_string(),
        })?;
        serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            let reason = e.into_inner().to_string();
            SettingsError::Key {
                key: unknown_field_key(&key, &reason),
                reason,
            }
        })
    }
}

/// The checked-in defaults alone, ignoring the process environment: what
/// tests and embedding programs start from before setting fields in code.
///
/// # Panics
/// When the defaults do not load: they are checked in, and a test of each
/// service loads them, so that is a bug in the build, not in the input.
pub fn defaults<T: DeserializeOwned>(defaults_yaml: &str) -> T {
    Loader::new(defaults_yaml)
        .environment(Vec::<(String, String)>::new())
        .load()
        .unwrap_or_else(|e| panic!("the checked-in defaults do not load: {e}"))
}

/// The checked-in defaults of a service run inside another program (tests,
/// the demo, `load --embedded`): HTTP on an ephemeral loopback port and,
/// for a service with a `kafka` section, `bootstrap` as its broker. The
/// process environment is not read.
///
/// # Panics
/// As [`defaults`].
pub fn in_process<T: DeserializeOwned>(defaults_yaml: &str, bootstrap: &str) -> T {
    let mut vars = vec![
        (format!("{ENV_PREFIX}__HTTP__HOST"), "127.0.0.1".to_string()),
        (format!("{ENV_PREFIX}__HTTP__PORT"), "0".to_string()),
    ];
    let mut loader = Loader::new(defaults_yaml);
    if defaults_yaml.lines().any(|line| line.starts_with("kafka:")) {
        vars.push((BOOTSTRAP_ENV.to_string(), bootstrap.to_string()));
        loader = loader.kafka_section("kafka");
    }
    loader
        .environment(vars)
        .load()
        .unwrap_or_else(|e| panic!("the checked-in defaults do not load: {e}"))
}

/// serde reports an unknown field at the path of the struct holding it;
/// append the field's own name so the message names the exact key.
fn unknown_field_key(path: &str, reason: &str) -> String {
    let field = reason
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    match (field, path) {
        (Some(field), "." | "") => field.to_string(),
        (Some(field), path) if !path.ends_with(field) => format!("{path}.{field}"),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_is_never_printed_by_debug() {
        let secret: super::Secret = serde_yaml::from_str("hunter2").unwrap();
        assert_eq!(secret.expose(), "hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn durations_are_read_as_humantime_strings() {
        #[derive(serde::Deserialize)]
        struct Timeouts {
            #[serde(with = "super::duration")]
            wait: std::time::Duration,
        }
        let parsed: Timeouts = serde_yaml::from_str("wait: 1m 500ms").unwrap();
        assert_eq!(parsed.wait, std::time::Duration::from_millis(60_500));
        for bare in ["wait: 500", "wait: '500'", "wait: soon"] {
            let error = serde_yaml::from_str::<Timeouts>(bare).err().unwrap();
            assert!(
                error.to_string().contains("with its unit, such as"),
                "{error}"
            );
        }
    }

    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Kafka {
        bootstrap_servers: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Pipeline {
        waiters: u32,
        default_wait_ms: u64,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Example {
        kafka: Kafka,
        pipeline: Pipeline,
    }

    const DEFAULTS: &str = "
kafka:
  bootstrap_servers: localhost:9092
pipeline:
  waiters: 50
  default_wait_ms: 500
";

    fn load(vars: &[(&str, &str)]) -> Result<Example, SettingsError> {
        Loader::new(DEFAULTS)
            .kafka_section("kafka")
            .environment(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .load()
    }

    #[test]
    fn defaults_load_as_written() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.pipeline.waiters, 50);
        assert_eq!(settings.kafka.bootstrap_servers, "localhost:9092");
    }

    #[test]
    fn environment_overrides_nested_keys_with_double_underscore() {
        let settings = load(&[("WAITER_BUS__PIPELINE__WAITERS", "10000")]).unwrap();
        assert_eq!(settings.pipeline.waiters, 10_000);
        assert_eq!(settings.pipeline.default_wait_ms, 500);
    }

    #[test]
    fn kafka_bootstrap_servers_variable_wins_over_every_layer() {
        let settings = load(&[
            ("WAITER_BUS__KAFKA__BOOTSTRAP_SERVERS", "a:1"),
            ("KAFKA_BOOTSTRAP_SERVERS", "b:2"),
        ])
        .unwrap();
        assert_eq!(settings.kafka.bootstrap_servers, "b:2");
    }

    #[test]
    fn unknown_environment_key_is_named() {
        let err = load(&[("WAITER_BUS__PIPELINE__WAITERZ", "3")]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("pipeline.waiterz"), "{message}");
    }

    #[test]
    fn wrong_typed_key_is_named() {
        let err = load(&[("WAITER_BUS__PIPELINE__WAITERS", "many")]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("pipeline.waiters"), "{message}");
    }

    #[test]
    fn unknown_top_level_key_in_file_is_named() {
        let dir = std::env::temp_dir().join(format!("settings-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("override.yaml");
        std::fs::write(&path, "telemetri:\n  enabled: true\n").unwrap();
        let err = Loader::new(DEFAULTS)
            .file(Some(&path))
            .environment(Vec::<(String, String)>::new())
            .load::<Example>()
            .unwrap_err();
        assert!(err.to_string().contains("`telemetri`"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Loader::new(DEFAULTS)
            .file(Some("/nonexistent/waiter.yaml"))
            .environment(Vec::<(String, String)>::new())
            .load::<Example>()
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/waiter.yaml"),
            "{err}"
        );
    }

    #[test]
    fn malformed_yaml_is_a_clear_error() {
        let err = Loader::new("kafka: [unclosed")
            .environment(Vec::<(String, String)>::new())
            .load::<Example>()
            .unwrap_err();
        assert!(err.to_string().contains("defaults"), "{err}");
    }
}
