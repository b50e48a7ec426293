//! How long wasmtime 48 takes to compile a component with each of its
//! compilers and settings, and to load the compiled artifact (what the
//! host's compile cache does on a hit). A measurement, not part of Sluice:
//!
//!     cargo run --release --manifest-path scripts/compile-options/Cargo.toml -- A.wasm [B.wasm ...]
use std::time::Instant;
use wasmtime::{Config, Engine, OptLevel, Strategy, component::Component};
fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for (name, strategy, opt, parallel) in [
            ("cranelift speed", Strategy::Cranelift, OptLevel::Speed, true),
            ("cranelift speed 1 thread", Strategy::Cranelift, OptLevel::Speed, false),
            ("cranelift none", Strategy::Cranelift, OptLevel::None, true),
            ("winch", Strategy::Winch, OptLevel::Speed, true),
        ] {
            let mut c = Config::new();
            c.wasm_component_model(true).epoch_interruption(true).strategy(strategy).cranelift_opt_level(opt).parallel_compilation(parallel);
            let engine = Engine::new(&c).unwrap();
            let t = Instant::now();
            let comp = Component::new(&engine, &bytes).unwrap();
            let compile = t.elapsed();
            let ser = comp.serialize().unwrap();
            let t = Instant::now();
            let _c2 = unsafe { Component::deserialize(&engine, &ser) }.unwrap();
            let load = t.elapsed();
            println!("{f}: {name}: compile {:.2}s, artifact {} MB, load from artifact {:.3}s", compile.as_secs_f64(), ser.len() >> 20, load.as_secs_f64());
        }
    }
}
