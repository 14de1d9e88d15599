//! netshim as a CNI plugin (spec 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0).
//!
//! The `netshim` binary is a CNI plugin when `CNI_COMMAND` is set. It is meant to be chained
//! after the plugin that makes the pod interface (ptp, bridge, ...), the way
//! firecracker-containerd chains tc-redirect-tap:
//! - ADD attaches the netns ([`crate::sandbox::attach`], options from the configuration's
//!   keys, see [`config`]) and returns `prevResult` in the configuration's version
//!   ([`convert`]) with the tap of CNI_IFNAME's endpoint added (`name`, `mac` = the pod
//!   interface's MAC, `sandbox` = CNI_NETNS), then the VM's pseudo-interface and its IP
//!   ([`vm_interface`], firecracker-go-sdk's contract). It refuses a CNI_IFNAME that is no
//!   interface name or would get no tap before it changes anything.
//! - DEL detaches by what netshim recorded for CNI_NETNS; it reads nothing of the
//!   configuration but its `cniVersion` (for an error result), so a configuration ADD
//!   refused, or no configuration at all, does not stop it. It succeeds when there is
//!   nothing to detach or the netns is gone.
//! - CHECK (from 0.4.0) verifies the attachment recorded by ADD is still there and connected.
//! - STATUS (from 1.1.0) says whether bpffs and /dev/net/tun are usable; GC (from 1.1.0)
//!   collects dead namespaces' leftovers; VERSION lists [`version::SUPPORTED_VERSIONS`].
//!
//! Errors are CNI error results ([`CniError`]) with the spec's codes (netshim's own from 100).

pub mod commands;
pub mod config;
pub mod convert;
pub mod env;
pub mod error;
pub mod install;
pub mod limits;
pub mod result;
pub mod version;
pub mod vm_interface;

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
    let command = env.command.as_str();
    // A command newer than the configuration's version is refused first (code 1), as the
    // reference plugins' skel does; an unsupported version is parse's code 1.
    let parse = || {
        config::peek_version(stdin).map_or(Ok(()), |v| version::allows(command, &v))?;
        config::parse(stdin)
    };
    let outcome = match command {
        "VERSION" => Ok(Some(version::version_info())),
        "ADD" => parse().and_then(|conf| {
            commands::add(env, &conf)
                .map(|r| Some(serde_json::to_value(r).expect("a result serializes")))
        }),
        // The configuration is not read (see the module docs).
        "DEL" => commands::del(env).map(|()| None),
        "CHECK" => parse().and_then(|conf| commands::check(env, &conf).map(|()| None)),
        "STATUS" => parse().and_then(|_| commands::status().map(|()| None)),
        "GC" => parse().and_then(|_| commands::gc().map(|()| None)),
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
        assert_eq!(
            out.stdout.unwrap()["supportedVersions"],
            serde_json::json!(version::SUPPORTED_VERSIONS)
        );
    }

    #[test]
    fn commands_newer_than_the_config_are_refused_first() {
        for (command, v) in [("CHECK", "0.3.1"), ("STATUS", "1.0.0"), ("GC", "0.4.0")] {
            // Even with a key netshim refuses: the version is the first thing wrong.
            let conf = format!(r#"{{"cniVersion":"{v}","name":"n","type":"netshim","queues":0}}"#);
            let out = run(&env(command), conf.as_bytes());
            let e = out.stdout.unwrap();
            assert_eq!((out.exit_code, &e["code"]), (EXIT_ERROR, &1.into()), "{e}");
            assert_eq!(e["cniVersion"], v);
            assert_eq!(
                e["msg"],
                format!("config version does not allow {command}"),
                "{e}"
            );
        }
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
        let out = run(&env("CHECK"), b"{");
        assert_eq!(out.stdout.unwrap()["code"], 6);
    }

    /// DEL does not read the configuration: one that ADD refuses, or none, is no error.
    #[test]
    fn del_without_netns_succeeds_silently_whatever_the_config() {
        for stdin in [
            &br#"{"cniVersion":"1.1.0","name":"n","type":"netshim"}"#[..],
            br#"{"cniVersion":"0.4.0","name":"n","type":"netshim","tap_name":"bad/name"}"#,
            br#"{"cniVersion":"9.9.9"}"#,
            b"{",
            b"",
        ] {
            let out = run(&env("DEL"), stdin);
            let want = Outcome {
                stdout: None,
                exit_code: 0,
            };
            assert_eq!(out, want, "{}", String::from_utf8_lossy(stdin));
        }
    }

    #[test]
    fn stdin_is_bounded() {
        let big = vec![b'x'; MAX_CONFIG_BYTES + 10];
        assert_eq!(read_stdin(&big[..]).unwrap().len(), MAX_CONFIG_BYTES + 1);
    }
}
