//! Why the agent cannot run here.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "netshim {command} runs in a pid namespace of its own (/proc/self/ns/pid is not the \
         host's): it tells a sandbox's netns alive from every process's namespaces, and \
         would collect sandboxes of processes it cannot see. Run it with the host's pid \
         namespace (Kubernetes `hostPID: true`, podman `--pid host`)"
    )]
    NotHostPid { command: &'static str },
    #[error(
        "netshim agent: {path} is not the host's ({detail}): the CNI plugin, run by the \
         container runtime on the host, keeps its locks and state there. Mount the host's \
         {path} at {path} (a hostPath volume{propagation})"
    )]
    NotHostDir {
        path: PathBuf,
        detail: String,
        propagation: &'static str,
    },
    #[error("netshim agent: {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}
