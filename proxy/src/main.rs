//! The `wasp` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    wasp::cli::main()
}
