//! The `banyan` binary: everything lives in the library; see `cli`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Transparent huge pages make each 4 KiB a thread touches cost up to 2 MiB of resident
    // memory: 66 MiB instead of 48 with 1,000 idle keep-alive clients after load
    // (`benches/load.sh`). mimalloc's `no_thp` feature stops it asking for them
    // (`MADV_HUGEPAGE` on its arena); this covers kernels that give them unasked (`always`).
    // A proxy's heap is small and scattered; it gains nothing from them.
    // SAFETY: sets one flag on this process; no memory is touched.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // rustls needs one process-wide crypto provider (ring: no aws-lc in this build).
    pingora::tls::install_default_crypto_provider();
    banyan::cli::main()
}
