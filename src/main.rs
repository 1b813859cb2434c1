//! The `banyan` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    banyan::cli::main()
}
