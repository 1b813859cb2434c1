//! The `banyan` binary: everything lives in the library; see `cli`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // rustls needs one process-wide crypto provider (ring: no aws-lc in this build).
    pingora::tls::install_default_crypto_provider();
    banyan::cli::main()
}
