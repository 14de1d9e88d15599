//! The kata-style TOML configuration file: any text either parses into values that are
//! valid on their own, or is refused with an error; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netshim::config::{parse, MAX_CONFIG_BYTES};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if data.len() as u64 > MAX_CONFIG_BYTES {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = parse(text, Path::new("fuzz.toml")) {
        // Whatever was accepted must survive a round trip through its own names.
        if let Some(model) = config.model {
            assert_eq!(model.to_string().parse().ok(), Some(model));
        }
    }
});
