#![forbid(unsafe_code)]

fn main() {
    std::process::exit(mender_rs::cli::main());
}
