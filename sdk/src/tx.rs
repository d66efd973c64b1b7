//! Transactional publishes (protocol 4): a message prepared on the broker, invisible to
//! every reader until it is committed (then stored and delivered, at the offset it gets
//! then) or rolled back (dropped). The broker asks the producer about one left undecided
//! (a check-back); [`Client::tx_checks`] hands those questions to the application.
//!
//! ```no_run
//! # async fn demo(client: mote_sdk::Client) -> Result<(), mote_sdk::Error> {
//! let tx = client.publish_prepared("orders/new", r#"{"order":17}"#).await?;
//! // ... the local transaction ...
//! let done = tx.commit().await?;
//! println!("delivered at offset {}", done.offset);
//! # Ok(()) }
//! ```

use crate::client::{Answer, Pending};
use crate::wire::{self, Frame, Prepare, Settle};
use crate::{Client, Error};

/// A prepared transaction: [`Tx::commit`] or [`Tx::rollback`] it. Dropping it decides
/// nothing: the broker checks back, then applies its `--tx-default`.
#[derive(Debug, Clone)]
pub struct Tx {
    id: u64,
    client: Client,
}

/// A committed transaction's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The offset it got in its topic.
    pub offset: u64,
    /// When it was stored, ms since the Unix epoch.
    pub time: u64,
}

/// The broker asks whether to commit a transaction this client (or an earlier
/// connection with the same client name, [`crate::Options::name`]) prepared.
#[derive(Debug, Clone)]
pub struct TxCheck {
    /// The transaction: [`Tx::commit`] or [`Tx::rollback`] it.
    pub tx: Tx,
    /// Its topic.
    pub topic: String,
    /// 1 for the first check.
    pub attempt: u32,
}

/// A check as the driver queues it: `(tx, topic, attempt)`.
pub(crate) type Queued = (u64, String, u32);

/// Check-backs from the broker, in the order they came; see [`Client::tx_checks`]. It
/// holds a handle on its client (the checks' [`Tx`] settle through it).
#[derive(Debug)]
pub struct TxChecks {
    rx: async_channel::Receiver<Queued>,
    client: Client,
}

impl TxChecks {
    fn wrap(&self, (id, topic, attempt): Queued) -> TxCheck {
        TxCheck {
            tx: self.client.tx(id),
            topic,
            attempt,
        }
    }

    /// The next check; `None` once the client is closed.
    pub async fn next(&self) -> Option<TxCheck> {
        let q = self.rx.recv().await.ok()?;
        Some(self.wrap(q))
    }

    /// The next check if one is waiting.
    pub fn try_next(&self) -> Option<TxCheck> {
        let q = self.rx.try_recv().ok()?;
        Some(self.wrap(q))
    }
}

/// Checks queued for the application before it reads them; more are dropped (the broker
/// asks again).
const CHECKS_QUEUED: usize = 256;

impl Tx {
    /// The transaction's id (HTTP and the CLI write it as 16 lowercase hex digits:
    /// [`Tx::hex`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The id as 16 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.id)
    }

    /// Commits: the broker stores and delivers the message now. An unknown or settled
    /// transaction is [`Error::Broker`] with [`crate::ErrorCode::NOT_FOUND`].
    pub async fn commit(&self) -> Result<Committed, Error> {
        let (offset, time) = self.client.settle(self.id, true).await?;
        Ok(Committed { offset, time })
    }

    /// Rolls back: the message is dropped, never delivered.
    pub async fn rollback(&self) -> Result<(), Error> {
        self.client.settle(self.id, false).await.map(|_| ())
    }
}

impl Client {
    /// Prepares a transactional publish (protocol 4; an older broker is
    /// [`Error::Unsupported`] before anything is sent): the broker holds the message,
    /// invisible to every reader, until [`Tx::commit`] or [`Tx::rollback`].
    pub async fn publish_prepared(
        &self,
        topic: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<Tx, Error> {
        self.publish_prepared_with_key(topic, None, payload).await
    }

    /// [`Client::publish_prepared`] with a message key.
    pub async fn publish_prepared_with_key(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<Tx, Error> {
        self.need_version(wire::REQUEST_VERSION, "transactional publishes")?;
        let payload = payload.as_ref();
        self.check(topic, payload)?;
        let (tx, rx) = async_channel::bounded(1);
        self.enqueue(|st| {
            let req = st.take_id();
            Frame::Prepare(Prepare {
                req,
                topic,
                key,
                payload,
            })
            .encode(&mut st.buf);
            Some(Pending {
                tx: Answer::Offset(tx.clone()),
                sent: false,
                frame: None,
            })
        })
        .await?;
        let id = rx.recv().await.unwrap_or(Err(Error::Closed))?;
        Ok(Tx {
            id,
            client: self.clone(),
        })
    }

    /// A transaction prepared elsewhere (another process, `mote pub --tx`, HTTP), to
    /// settle by its id.
    pub fn tx(&self, id: u64) -> Tx {
        Tx {
            id,
            client: self.clone(),
        }
    }

    /// The broker's check-backs of undecided transactions, from now on (one stream per
    /// client: a second call replaces the first). Without it, checks are ignored and the
    /// broker applies its `--tx-default` after `--tx-check-max` checks. To be asked
    /// after a restart about what an earlier process prepared, connect with the same
    /// [`crate::Options::name`].
    pub fn tx_checks(&self) -> TxChecks {
        let (tx, rx) = async_channel::bounded(CHECKS_QUEUED);
        self.shared().lock().tx_checks = Some(tx);
        TxChecks {
            rx,
            client: self.clone(),
        }
    }

    async fn settle(&self, id: u64, commit: bool) -> Result<(u64, u64), Error> {
        self.need_version(wire::REQUEST_VERSION, "transactional publishes")?;
        let (tx, rx) = async_channel::bounded(1);
        self.enqueue(|st| {
            let req = st.take_id();
            Frame::Settle(Settle {
                req,
                tx: id,
                commit,
            })
            .encode(&mut st.buf);
            Some(Pending {
                tx: Answer::Settled(tx.clone()),
                sent: false,
                frame: None,
            })
        })
        .await?;
        rx.recv().await.unwrap_or(Err(Error::Closed))
    }
}

/// The driver got a `TxCheck`: hands it to the application, if it listens.
pub(crate) fn check(shared: &crate::client::Shared, c: &wire::TxCheck<'_>) {
    let Some(tx) = shared.lock().tx_checks.clone() else {
        return;
    };
    let _ = tx.try_send((c.tx, c.topic.to_string(), c.attempt));
}
