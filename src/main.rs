fn main() {
    std::process::exit(envrun::run());
}
