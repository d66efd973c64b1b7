//! The `mote` binary: broker, publisher, subscriber and benchmark in one.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
