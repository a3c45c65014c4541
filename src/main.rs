//! The `cpc-rules` binary: serve decisions over gRPC, and let policy leads check, test,
//! evaluate and compare rules. All behaviour lives in the library; this only parses arguments.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
