//! One side of a peer channel, async: sends what it is given, prints what the other side
//! sends and when it comes and goes. Run it twice, once with `listen`, or pair it with
//! `mote chan door --listen`.
//!
//! ```text
//! mote serve &
//! cargo run -p mote-sdk --example channel -- 127.0.0.1:7270 door listen &
//! cargo run -p mote-sdk --example channel -- 127.0.0.1:7270 door connect hello
//! ```

use mote_sdk::{Channel, ChannelEvent, Client, Options};

fn main() -> Result<(), mote_sdk::Error> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7270".into());
    let name = args.next().unwrap_or_else(|| "door".into());
    let side = args.next().unwrap_or_else(|| "connect".into());
    let say: Vec<String> = args.collect();
    async_io::block_on(async {
        let client = Client::connect(Options::new(addr).name("example-channel")).await?;
        let mut ch = if side == "listen" {
            Channel::listen(&client, &name).await?
        } else {
            Channel::connect(&client, &name).await?
        };
        for line in &say {
            let offset = ch.send(line).await?;
            eprintln!("sent {line:?} (offset {offset})");
        }
        while let Some(event) = ch.recv().await {
            match event {
                ChannelEvent::Message(m) => println!("{}", String::from_utf8_lossy(&m.payload)),
                ChannelEvent::RemoteConnected => eprintln!("remote connected"),
                ChannelEvent::RemoteDisconnected => eprintln!("remote disconnected"),
                ChannelEvent::Ended => {
                    eprintln!("the other side ended the channel");
                    break;
                }
                ChannelEvent::Missed { missed } => eprintln!("missed {missed} messages"),
                ChannelEvent::Refused { message, .. } => eprintln!("refused: {message}"),
                _ => {}
            }
        }
        ch.end().await
    })
}
