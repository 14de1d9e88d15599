//! The `netshim` command line: argument parsing and output. The library does the work.

pub mod args;
pub mod cni;
pub mod install;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod run;
pub mod signal;
pub mod tools;
