//! netshim as a CNI plugin (spec 1.0.0 and 1.1.0).
//!
//! The `netshim` binary is a CNI plugin when `CNI_COMMAND` is set. It is meant to be chained
//! after the plugin that makes the pod interface (ptp, bridge, ...), the way
//! firecracker-containerd chains tc-redirect-tap:
//! - ADD attaches the netns ([`crate::sandbox::attach`], options from the configuration's
//!   keys, see [`config`]) and returns `prevResult` with the tap of CNI_IFNAME's endpoint
//!   added (`name`, `mac` = the pod interface's MAC, `sandbox` = CNI_NETNS).
//! - DEL detaches; it succeeds when there is nothing to detach or the netns is gone.
//! - CHECK verifies the attachment recorded by ADD is still there and connected.
//! - STATUS says whether bpffs and /dev/net/tun are usable; GC collects dead namespaces'
//!   leftovers; VERSION lists [`version::SUPPORTED_VERSIONS`].
//!
//! Errors are CNI error results ([`CniError`]) with the spec's codes (netshim's own from 100).

pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use config::{parse, NetConf, MAX_CONFIG_BYTES};
pub use env::{CniEnv, COMMAND_VAR};
pub use error::CniError;
pub use result::CniResult;

/// What the plugin prints on stdout and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Option<serde_json::Value>,
    pub exit_code: i32,
}

/// Exit code of a failed call (the error result is on stdout).
pub const EXIT_ERROR: i32 = 1;

/// Runs one plugin call: `env` from the CNI_* variables, `stdin` the configuration.
pub fn run(env: &CniEnv, stdin: &[u8]) -> Outcome {
    let outcome = match env.command.as_str() {
        "VERSION" => Ok(Some(version::version_info())),
        "ADD" => config::parse(stdin).and_then(|conf| {
            commands::add(env, &conf)
                .map(|r| Some(serde_json::to_value(r).expect("a result serializes")))
        }),
        "DEL" => config::parse(stdin).and_then(|_| commands::del(env).map(|()| None)),
        "CHECK" => config::parse(stdin).and_then(|conf| commands::check(env, &conf).map(|()| None)),
        "STATUS" => config::parse(stdin).and_then(|_| commands::status().map(|()| None)),
        "GC" => config::parse(stdin).and_then(|_| commands::gc().map(|()| None)),
        other => Err(
            CniError::new(error::INVALID_ENV, format!("unknown CNI_COMMAND {other:?}"))
                .with_details("netshim knows ADD, DEL, CHECK, STATUS, GC and VERSION"),
        ),
    };
    match outcome {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err(e) => {
            let version = config::peek_version(stdin);
            Outcome {
                stdout: Some(e.to_json(version.as_deref().unwrap_or(version::LATEST))),
                exit_code: EXIT_ERROR,
            }
        }
    }
}

/// Reads at most [`MAX_CONFIG_BYTES`] + 1 bytes (one more than allowed, so that a larger
/// input is seen and refused by [`config::parse`]).
pub fn read_stdin(input: impl std::io::Read) -> Result<Vec<u8>, CniError> {
    use std::io::Read;
    let mut buf = Vec::new();
    input
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            CniError::new(
                error::IO_FAILURE,
                "reading the network configuration from stdin",
            )
            .with_details(e.to_string())
        })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: &str) -> CniEnv {
        CniEnv {
            command: command.into(),
            ..CniEnv::default()
        }
    }

    #[test]
    fn version_needs_no_config() {
        let out = run(&env("VERSION"), b"");
        assert_eq!(out.exit_code, 0);
        assert_eq!(out.stdout.unwrap()["supportedVersions"][0], "1.0.0");
    }

    #[test]
    fn errors_carry_the_config_version_and_fail() {
        let out = run(
            &env("ADD"),
            br#"{"cniVersion":"1.0.0","name":"n","type":"netshim"}"#,
        );
        assert_eq!(out.exit_code, EXIT_ERROR);
        let v = out.stdout.unwrap();
        assert_eq!(
            (v["code"].as_u64(), v["cniVersion"].as_str()),
            (Some(4), Some("1.0.0"))
        );
        let out = run(&env("FROB"), b"{}");
        assert_eq!(out.stdout.unwrap()["code"], 4);
        let out = run(&env("DEL"), b"{");
        assert_eq!(out.stdout.unwrap()["code"], 6);
    }

    #[test]
    fn del_without_netns_succeeds_silently() {
        let out = run(
            &env("DEL"),
            br#"{"cniVersion":"1.1.0","name":"n","type":"netshim"}"#,
        );
        assert_eq!(
            out,
            Outcome {
                stdout: None,
                exit_code: 0
            }
        );
    }

    #[test]
    fn stdin_is_bounded() {
        let big = vec![b'x'; MAX_CONFIG_BYTES + 10];
        assert_eq!(read_stdin(&big[..]).unwrap().len(), MAX_CONFIG_BYTES + 1);
    }
}
