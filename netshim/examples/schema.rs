//! Writes the published JSON Schemas (netshim::schema) into docs/schema/:
//! `cargo run -p netshim --example schema`. An example, not a `netshim` subcommand or an
//! xtask: it needs the library (which xtask does not build: it must run before the eBPF
//! toolchain is set up), and it is a development task, not something the product ships.

use std::path::Path;

use netshim::schema;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(schema::SCHEMA_DIR);
    std::fs::create_dir_all(&dir)?;
    for (name, text) in schema::schemas() {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, text)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
