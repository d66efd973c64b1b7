//! Subscribes from a plain thread and prints messages; survives broker restarts and
//! resumes after the last message it printed.
//!
//! ```text
//! mote serve &
//! cargo run -p mote-sdk --example subscribe -- 127.0.0.1:7270 'home/+/temp'
//! ```

use mote_sdk::blocking::Client;
use mote_sdk::{Event, Options, Start};

fn main() -> Result<(), mote_sdk::Error> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7270".into());
    let filter = args.next().unwrap_or_else(|| "home/#".into());
    let client = Client::connect(Options::new(addr).name("example-subscribe"))?;
    // The last 10 messages of every matching topic, then everything new.
    for event in client.subscribe(&filter, Start::Last(10))? {
        match event {
            Event::Message(m) => println!(
                "{} #{} {}",
                m.topic,
                m.offset,
                String::from_utf8_lossy(&m.payload)
            ),
            Event::Lag { topic, missed, .. } => {
                eprintln!("fell behind: missed {missed} messages of {topic}")
            }
            Event::Evicted { topic, missed, .. } => {
                eprintln!("{missed} messages of {topic} were gone before we asked")
            }
            Event::Refused { message, .. } => eprintln!("refused: {message}"),
            _ => {}
        }
    }
    Ok(())
}
