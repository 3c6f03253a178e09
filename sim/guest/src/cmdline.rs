//! The guest command line (IGVM COMMAND_LINE parameter): `key=value` words separated by spaces.

/// The options the guest knows, for the message about an unknown one.
pub const KNOWN: &str = "test=<all|NAME>";

/// The parsed command line.
pub struct Options<'a> {
    /// `test=NAME` runs one check (or a run-ending one), `test=all` or no option runs them all.
    pub test: &'a str,
    line: &'a str,
}

impl<'a> Options<'a> {
    pub fn parse(line: &'a str) -> Self {
        let test = line
            .split_ascii_whitespace()
            .filter_map(|w| w.strip_prefix("test="))
            .rfind(|v| !v.is_empty())
            .unwrap_or("all");
        Options { test, line }
    }

    /// The words of the command line the guest does not understand.
    pub fn unknown(&self) -> impl Iterator<Item = &'a str> {
        self.line
            .split_ascii_whitespace()
            .filter(|w| w.strip_prefix("test=").is_none_or(str::is_empty))
    }
}
