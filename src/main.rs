fn main() {
    std::process::exit(mender_rs::cli::main());
}
