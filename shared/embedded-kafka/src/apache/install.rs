//! Getting the broker's jars: resolved once from Maven Central by the
//! checked-in `apache/pom.xml` into a cache outside the work tree.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{ApacheKafkaError, io};

/// The Maven file that names the broker's artifacts; its `kafka.version` is
/// the version run here and in the compose and Kubernetes files.
pub const POM: &str = include_str!("../../apache/pom.xml");

/// The Apache Kafka version [`POM`] resolves.
pub fn version() -> &'static str {
    POM.split_once("<kafka.version>")
        .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
        .map(|(version, _)| version.trim())
        .expect("apache/pom.xml names <kafka.version>")
}

/// The cache holding the broker's jars: `$WAITER_BUS_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/waiter-bus`, else `~/.cache/waiter-bus`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WAITER_BUS_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("waiter-bus");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("waiter-bus")
}

/// Makes sure the broker's jars are in the cache and returns their folder.
///
/// The first call runs Maven (`dependency:copy-dependencies`) on [`POM`];
/// the jars land in a temporary folder renamed into place when complete, so
/// an interrupted download or two processes installing at once never leave
/// a half-filled folder behind. Later calls need no network.
pub fn install() -> Result<PathBuf, ApacheKafkaError> {
    let root = cache_dir().join(format!("apache-kafka-{}", version()));
    let lib = root.join("lib");
    if lib.join("kafka.Kafka.ready").exists() {
        return Ok(lib);
    }
    require(
        "mvn",
        "install Maven (Debian: apt-get install maven) to download Apache Kafka once",
    )?;
    std::fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
    let staging = tempfile::Builder::new()
        .prefix("install-")
        .tempdir_in(&root)
        .map_err(io("creating a staging folder"))?;
    let pom = staging.path().join("pom.xml");
    std::fs::write(&pom, POM).map_err(io("writing pom.xml"))?;
    eprintln!(
        "kafka-dev: downloading Apache Kafka {} from Maven Central into {} (once)",
        version(),
        root.display()
    );
    let output = Command::new("mvn")
        .arg("-B")
        .arg("-q")
        .arg("-f")
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg("-DincludeScope=runtime")
        .arg(format!(
            "-DoutputDirectory={}",
            staging.path().join("lib").display()
        ))
        .stdin(Stdio::null())
        .output()
        .map_err(io("running mvn"))?;
    if !output.status.success() {
        return Err(ApacheKafkaError::Install {
            version: version(),
            output: String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into(),
        });
    }
    std::fs::write(
        staging.path().join("lib").join("kafka.Kafka.ready"),
        version(),
    )
    .map_err(io("marking the install complete"))?;
    match std::fs::rename(staging.path().join("lib"), &lib) {
        Ok(()) => {}
        // Another process finished first; its copy is as good as ours.
        Err(_) if lib.join("kafka.Kafka.ready").exists() => {}
        Err(e) => return Err(io(format!("moving the jars to {}", lib.display()))(e)),
    }
    Ok(lib)
}

pub(super) fn require(
    program: &'static str,
    install: &'static str,
) -> Result<(), ApacheKafkaError> {
    match Command::new(program)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApacheKafkaError::Missing { program, install })
        }
        Err(e) => Err(io(format!("running {program}"))(e)),
    }
}
