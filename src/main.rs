fn main() -> std::process::ExitCode {
    courtline::cli::main()
}
