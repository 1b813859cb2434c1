//! Route files: any text is loaded or refused with diagnostics, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use banyan::config::Config;
use libfuzzer_sys::fuzz_target;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("banyan-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("banyan.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = [\"127.0.0.1:8080\"]\ndefault_upstream = \"monolith\"\n\n\
             [upstreams.monolith]\npeers = [\"127.0.0.1:8081\"]\n\n\
             [upstreams.orders]\npeers = [\"127.0.0.1:8082\"]\n",
        )
        .expect("config");
        Config::load(&file, &dir).expect("the fuzz config loads").0
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = [(PathBuf::from("routes/fuzz.toml"), text.to_string())];
    let _ = banyan::routes::load_sources(&sources, config());
});
