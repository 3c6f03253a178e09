//! The kernel command line: `key=value` words separated by spaces.

use log::LevelFilter;

/// The options the kernel knows, for the message about an unknown one.
pub const KNOWN: &str = "log=<error|warn|info|debug|trace>, test=<all|NAME>, bench=vc";

/// The parsed command line. Unknown words are kept to be reported once logging works.
pub struct Options<'a> {
    pub log_level: LevelFilter,
    /// `test=all` or `test=NAME`: run the in-kernel suite (or one case) and exit.
    pub test: Option<&'a str>,
    /// `bench=NAME`: run a benchmark (`crate::bench`) instead of the tests, and exit.
    pub bench: Option<&'a str>,
    line: &'a str,
}

impl<'a> Options<'a> {
    pub fn parse(line: &'a str) -> Self {
        let mut o = Options {
            log_level: LevelFilter::Info,
            test: None,
            bench: None,
            line,
        };
        for word in line.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("log", v)) => match v.parse() {
                    Ok(level) => o.log_level = level,
                    Err(_) => x86::serial_println!("kernel: bad log level `{v}`, using info"),
                },
                Some(("test", v)) if !v.is_empty() => o.test = Some(v),
                Some(("bench", v)) if !v.is_empty() => o.bench = Some(v),
                _ => {}
            }
        }
        o
    }

    /// The words of the command line the kernel does not understand.
    pub fn unknown(&self) -> impl Iterator<Item = &'a str> {
        self.line.split_ascii_whitespace().filter(|w| !is_known(w))
    }
}

fn is_known(word: &str) -> bool {
    match word.split_once('=') {
        Some(("log", _)) => true,
        Some(("test", v)) | Some(("bench", v)) => !v.is_empty(),
        _ => false,
    }
}
