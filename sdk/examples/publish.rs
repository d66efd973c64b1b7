//! Publishes readings with and without confirmation, from an async task on smol.
//!
//! ```text
//! mote serve &
//! cargo run -p mote-sdk --example publish -- 127.0.0.1:7270 home/kitchen/temp
//! ```

use mote_sdk::{Client, Options};

fn main() -> Result<(), mote_sdk::Error> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7270".into());
    let topic = args.next().unwrap_or_else(|| "home/kitchen/temp".into());
    smol::block_on(async {
        let client = Client::connect(Options::new(addr).name("example-publish")).await?;
        for i in 0..10 {
            let reading = format!("{:.1}", 20.0 + f64::from(i) / 10.0);
            // Fire and forget: returns once queued; refusals show up at the next flush.
            client.publish(&topic, &reading).await?;
        }
        // Confirmed: returns the offset the broker stored the message at.
        let offset = client.publish_confirmed(&topic, "21.0").await?;
        println!("the last reading is at offset {offset} of {topic}");
        client.close().await
    })
}
