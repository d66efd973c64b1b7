//! Arbitrary bytes into the frame decoder, `wire::decode`, under a few frame limits.
//!
//! Invariants: no panic; a frame uses at least 2 and at most all the input's bytes and
//! re-encodes to bytes that decode to the same frame; "incomplete" means the frame really
//! is longer than the input; a frame over the limit is refused from its prefix. Then the
//! input is read as a stream of frames, the way the broker and the SDK read a connection.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mote_sdk::wire::{self, DecodeError, Decoded, MAX_LENGTH_PREFIX};

/// No limit, the handshake's, the default `max_frame`, and a few small ones.
const LIMITS: [usize; 6] = [0, 1, 16, 512, 1024 * 1024 + 64 * 1024, usize::MAX];

fn check(data: &[u8], max: usize) -> Option<usize> {
    match wire::decode(data, max) {
        Ok(Decoded::Frame(frame, used)) => {
            assert!(
                used >= 2 && used <= data.len(),
                "used {used} of {}",
                data.len()
            );
            let (len, prefix) = wire::read_length(data).unwrap().unwrap();
            assert_eq!(prefix + len as usize, used);
            assert!(len as usize <= max);
            assert_eq!(data[prefix], frame.tag());
            // The encoder writes the shortest form; that decodes to the same frame.
            let again = frame.to_vec();
            assert!(again.len() <= used, "re-encoded longer than the input");
            assert_eq!(
                wire::decode(&again, usize::MAX),
                Ok(Decoded::Frame(frame, again.len()))
            );
            Some(used)
        }
        Ok(Decoded::Incomplete { total: Some(total) }) => {
            assert!(
                total > data.len(),
                "incomplete, but all {total} bytes are there"
            );
            let (len, prefix) = wire::read_length(data).unwrap().unwrap();
            assert_eq!(prefix + len as usize, total);
            assert!(len as usize <= max);
            None
        }
        Ok(Decoded::Incomplete { total: None }) => {
            assert!(data.len() < MAX_LENGTH_PREFIX, "a whole prefix is not read");
            assert_eq!(wire::read_length(data), Ok(None));
            None
        }
        Err(DecodeError::TooLarge { len, max: m }) => {
            assert_eq!(m, max);
            assert!(len > max as u64);
            None
        }
        Err(DecodeError::BadLength) => {
            assert_eq!(wire::read_length(data), Err(DecodeError::BadLength));
            None
        }
        Err(_) => None,
    }
}

fuzz_target!(|data: &[u8]| {
    for max in LIMITS {
        check(data, max);
    }
    // As a stream: frame after frame until one is incomplete or broken.
    let mut pos = 0;
    while let Some(used) = check(&data[pos..], usize::MAX) {
        pos += used;
        assert!(pos <= data.len());
    }
});
