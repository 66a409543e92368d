//! A broker's data directory: where its data, configuration and log live,
//! and the ports it keeps across restarts.

use std::path::{Path, PathBuf};

use super::{ApacheKafkaError, io};

/// What a data directory remembers between runs, so a restarted broker is
/// the same broker: same cluster, same address.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ports {
    pub(super) client: u16,
    pub(super) controller: u16,
}

pub(super) enum DataDir {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl DataDir {
    pub(super) fn path(&self) -> &Path {
        match self {
            DataDir::Kept(path) => path,
            DataDir::Temporary(dir) => dir.path(),
        }
    }
}

/// The ports a data directory was first started with, so a restart on it
/// keeps its address; new ones are free ports picked by the kernel.
pub(super) fn ports(data_dir: &Path, client: Option<u16>) -> Result<Ports, ApacheKafkaError> {
    let file = data_dir.join("ports");
    let saved = std::fs::read_to_string(&file).ok().and_then(|text| {
        let mut numbers = text
            .split_whitespace()
            .filter_map(|n| n.parse::<u16>().ok());
        Some((numbers.next()?, numbers.next()?))
    });
    let ports = match saved {
        Some((saved_client, controller)) => Ports {
            client: client.unwrap_or(saved_client),
            controller,
        },
        None => Ports {
            client: match client {
                Some(port) => port,
                None => free_port()?,
            },
            controller: free_port()?,
        },
    };
    std::fs::write(&file, format!("{} {}\n", ports.client, ports.controller))
        .map_err(io("writing the ports file"))?;
    Ok(ports)
}

fn free_port() -> Result<u16, ApacheKafkaError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port())
}

/// The broker logs WARN and above to its stdout, which goes to `broker.log`
/// in the data directory; kafka-dev's own stdout stays the bootstrap line.
pub(super) const LOG4J2: &str = "\
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
";
