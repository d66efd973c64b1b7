//! The `mote` binary: broker, publisher, subscriber and benchmark in one.

fn main() {
    std::process::exit(mote_cli::main());
}
