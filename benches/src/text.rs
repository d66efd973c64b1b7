//! What the text protocols (NATS, Redis) have in common: decimal lengths and `\r\n` lines.

use std::io;

/// Appends `n` in decimal (the text protocols' lengths), without formatting machinery.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The line at the start of `buf` without its `\r\n`, and the bytes it takes with it;
/// `None` if the line is not complete yet.
pub(crate) fn line(buf: &[u8]) -> io::Result<Option<(&[u8], usize)>> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let l = &buf[..i];
            Ok(Some((l.strip_suffix(b"\r").unwrap_or(l), i + 1)))
        }
        None if buf.len() > 64 * 1024 => Err(io::Error::other("a protocol line is too long")),
        None => Ok(None),
    }
}

/// Parses an ASCII decimal length.
pub(crate) fn parse_len(s: &[u8]) -> io::Result<usize> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::other(format!(
                "bad length {:?} from the broker",
                String::from_utf8_lossy(s)
            ))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn decimals_and_lines() {
        let mut out = Vec::new();
        for n in [0, 7, 1024, usize::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        assert_eq!(line(b"PONG\r\nrest").unwrap(), Some((&b"PONG"[..], 6)));
        assert_eq!(line(b"PON").unwrap(), None);
        assert_eq!(parse_len(b"42").unwrap(), 42);
        assert!(parse_len(b"4x").is_err());
    }
}
