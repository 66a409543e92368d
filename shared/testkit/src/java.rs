//! The Java request/reply client of the interop tests: the reference Kafka
//! client and Spring Kafka's `ReplyingKafkaTemplate` (`java/Interop.java`,
//! its jars named by `java/pom.xml`), so the waiter is proven against
//! clients this project did not write.
//!
//! [`InteropClient::find`] installs the jars once (Maven, into the same
//! cache as the Apache broker) and returns `None`, saying SKIPPED and why,
//! on the embedded broker (the Java client needs Apache Kafka) and where
//! Java or Maven is missing, unless CI requires the tools
//! (`WAITER_BUS_TEST_TOOLS=required`, then it panics). [`InteropClient::run`]
//! runs one scenario and returns the JSON line it printed.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The Maven file naming the client's jars.
const POM: &str = include_str!("../java/pom.xml");
/// The client itself, run by Java's source launcher (no build step).
const SOURCE: &str = include_str!("../java/Interop.java");

/// The installed client.
#[derive(Debug, Clone)]
pub struct InteropClient {
    lib: PathBuf,
    source: PathBuf,
}

impl InteropClient {
    /// The client, installed on first use; `None` where Java or Maven is
    /// missing (said on stderr; a failure in CI).
    pub fn find() -> Option<Self> {
        if !crate::TestKafka::is_real_broker() {
            // The reference client (4.x) asks for protocol versions the
            // embedded broker (librdkafka's mock) does not serve, and times
            // out fetching metadata; CI's Apache Kafka tier runs these.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"SKIPPED: the Java interop tests need Apache Kafka (set KAFKA_BOOTSTRAP_SERVERS, e.g. from `kafka-dev --apache`); the embedded broker does not speak the Java client's protocol versions\n",
            );
            return None;
        }
        for (tool, package) in [("javac", "openjdk-17-jdk-headless"), ("mvn", "maven")] {
            if !crate::tool_available(tool, package) {
                return None;
            }
        }
        Some(install().unwrap_or_else(|e| panic!("installing the Java interop client: {e}")))
    }

    /// Runs `Interop.java` with `args` and returns the JSON line it printed
    /// last; panics with its output if it failed.
    pub async fn run(&self, args: &[&str]) -> serde_json::Value {
        let mut command = Command::new("java");
        // The folder itself holds `simplelogger.properties`.
        let classpath = std::env::join_paths([self.lib.join("*"), self.lib.clone()])
            .expect("cache paths hold no separator");
        command
            .arg("-cp")
            .arg(classpath)
            .arg(&self.source)
            .args(args)
            .stdin(Stdio::null());
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the java run does not panic")
            .expect("java starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "Interop.java {args:?} failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        let line = stdout
            .lines()
            .rev()
            .find(|line| line.starts_with('{'))
            .unwrap_or_else(|| {
                panic!("Interop.java {args:?} printed no result:\n{stdout}\n{stderr}")
            });
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

/// Resolves the jars into `<cache>/interop-java-<hash of pom and source>`;
/// a folder is renamed into place only when complete, so two test binaries
/// installing at once, or an interrupted download, leave nothing half done.
fn install() -> Result<InteropClient, String> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    POM.hash(&mut hasher);
    SOURCE.hash(&mut hasher);
    let root =
        embedded_kafka::apache::cache_dir().join(format!("interop-java-{:016x}", hasher.finish()));
    let lib = root.join("lib");
    let source = root.join("Interop.java");
    if lib.join("ready").exists() && source.exists() {
        return Ok(InteropClient { lib, source });
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let staging = root.join(format!("staging-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let pom = staging.join("pom.xml");
    std::fs::write(&pom, POM).map_err(|e| format!("writing {}: {e}", pom.display()))?;
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "testkit: downloading the Java interop client's jars into {} (once)\n",
            root.display()
        )
        .as_bytes(),
    );
    let output = Command::new("mvn")
        .args(["-B", "-q", "-f"])
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg("-DincludeScope=runtime")
        .arg(format!(
            "-DoutputDirectory={}",
            staging.join("lib").display()
        ))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running mvn: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "mvn failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // The clients log every config at INFO; warnings are what matter.
    std::fs::write(
        staging.join("lib").join("simplelogger.properties"),
        "org.slf4j.simpleLogger.defaultLogLevel=warn\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(staging.join("lib").join("ready"), "").map_err(|e| e.to_string())?;
    std::fs::write(staging.join("Interop.java"), SOURCE).map_err(|e| e.to_string())?;
    std::fs::rename(staging.join("Interop.java"), &source).map_err(|e| e.to_string())?;
    match std::fs::rename(staging.join("lib"), &lib) {
        Ok(()) => {}
        // Another process finished first; its copy is as good.
        Err(_) if lib.join("ready").exists() => {}
        Err(e) => return Err(format!("moving the jars to {}: {e}", lib.display())),
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(InteropClient { lib, source })
}
