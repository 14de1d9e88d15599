//! Plugin mode: with `CNI_COMMAND` set, the binary speaks CNI instead of parsing arguments.

use netshim::cni;

/// Runs the CNI call when `CNI_COMMAND` is set (in the environment, even empty) and returns
/// the exit code; `None` otherwise. The result or the error result goes to stdout.
pub fn main_if_plugin() -> Option<i32> {
    std::env::var_os(cni::COMMAND_VAR)?;
    let env = cni::CniEnv::from_process();
    let outcome = match cni::read_stdin(std::io::stdin().lock()) {
        // VERSION needs neither privileges nor the host's bpffs.
        Ok(stdin) if env.command != "VERSION" => {
            match netshim::host::require(&format!("(CNI {})", env.command)) {
                Ok(()) => cni::run(&env, &stdin),
                Err(e) => cni::Outcome {
                    stdout: Some(
                        cni::CniError::new(
                            cni::error::NOT_AVAILABLE,
                            "netshim cannot serve this call here",
                        )
                        .with_details(e.to_string())
                        .to_json(
                            cni::config::peek_version(&stdin)
                                .as_deref()
                                .unwrap_or(cni::version::LATEST),
                        ),
                    ),
                    exit_code: cni::EXIT_ERROR,
                },
            }
        }
        Ok(stdin) => cni::run(&env, &stdin),
        // DEL does not need the configuration (see netshim::cni).
        Err(_) if env.command == "DEL" => cni::run(&env, b""),
        Err(e) => cni::Outcome {
            stdout: Some(e.to_json(cni::version::LATEST)),
            exit_code: cni::EXIT_ERROR,
        },
    };
    if let Some(json) = &outcome.stdout {
        println!(
            "{}",
            serde_json::to_string(json).expect("JSON values serialize")
        );
    }
    if let Some(err) = outcome.stdout.as_ref().filter(|_| outcome.exit_code != 0) {
        eprintln!("netshim (CNI {}): {}", env.command, err["msg"]);
    }
    Some(outcome.exit_code)
}
