//! `mote backup DIR DEST`: a consistent copy of a data directory, while a broker runs on it.

use std::ffi::OsString;
use std::path::PathBuf;

use super::args::CliError;

const HELP: &str = "\
Usage: mote backup DIR DEST

Copies the data directory DIR (mote serve --data DIR) into DEST, a new directory, while a
broker may be running on DIR: the copy is consistent (segments are only appended to, and
copied oldest first). Then checks the copy and prints what it holds. To restore, start a
broker with --data DEST.";

pub(crate) fn main(argv: Vec<OsString>) -> Result<(), CliError> {
    let args: Vec<String> = argv
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|_| CliError("arguments must be UTF-8".into()))
        })
        .collect::<Result<_, _>>()?;
    match args.as_slice() {
        [h] if h == "--help" || h == "-h" => {
            println!("{HELP}");
            Ok(())
        }
        [from, to] => {
            let (from, to) = (PathBuf::from(from), PathBuf::from(to));
            let r = mote::store::backup(&from, &to).map_err(|e| CliError(e.to_string()))?;
            println!(
                "backed up {} to {}: {} segment(s), {} bytes, {} topic(s), {} message(s)",
                from.display(),
                to.display(),
                r.segments,
                r.bytes,
                r.topics,
                r.messages
            );
            if r.damaged > 0 {
                println!(
                    "{} damaged region(s) in the copy, as in the original: a broker skips them",
                    r.damaged
                );
            }
            if r.torn_bytes > 0 {
                println!(
                    "the newest segment ends in {} bytes of a batch being written: a broker on the copy cuts them",
                    r.torn_bytes
                );
            }
            Ok(())
        }
        _ => Err(CliError(
            "usage: mote backup DIR DEST (see mote backup --help)".into(),
        )),
    }
}
