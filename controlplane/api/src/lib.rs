//! The Halyard agent's gRPC API (package `halyard.v1`) and its unix-socket transport.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

#[allow(clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("halyard.v1");
}

pub use v1::agent_client::AgentClient;
pub use v1::agent_server::{Agent, AgentServer};

/// The agent's default API socket.
pub const DEFAULT_SOCKET: &str = "/run/halyard/agent.sock";

/// Why the CLI could not reach the agent, phrased for a person.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "no agent socket at {0}: is halyard-agent running? Start it (e.g. `halyard-agent --manifest-dir DIR`) or point \
         the CLI at its socket with --socket or HALYARD_SOCKET"
    )]
    NoSocket(PathBuf),
    #[error(
        "the agent socket {0} refuses connections: halyard-agent is not running (a stale socket file was left behind)"
    )]
    Refused(PathBuf),
    #[error("permission denied on {0}: run as a user that may use the agent socket (often root)")]
    Permission(PathBuf),
    #[error("cannot connect to the agent at {path}: {source}")]
    Other { path: PathBuf, source: std::io::Error },
}

/// Connects to the agent's socket, with errors that say what to do.
pub async fn connect(path: &Path) -> Result<AgentClient<Channel>, ConnectError> {
    // Probe once so that a missing agent gives a clear message rather than a transport error.
    if let Err(e) = UnixStream::connect(path).await {
        let p = path.to_path_buf();
        return Err(match e.kind() {
            std::io::ErrorKind::NotFound => ConnectError::NoSocket(p),
            std::io::ErrorKind::ConnectionRefused => ConnectError::Refused(p),
            std::io::ErrorKind::PermissionDenied => ConnectError::Permission(p),
            _ => ConnectError::Other { path: p, source: e },
        });
    }
    let p = path.to_path_buf();
    // The URI is required by the HTTP/2 layer but unused: the connector ignores it.
    let channel = Endpoint::from_static("http://halyard-agent")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move { UnixStream::connect(p).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| ConnectError::Other { path: path.to_path_buf(), source: std::io::Error::other(e) })?;
    Ok(AgentClient::new(channel))
}

/// Binds the API socket, replacing a stale socket file but never a live agent's.
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("another agent is already serving {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(e) => Err(e),
    }
}
