//! Which export a file is, told from its first bytes, and the check that fits
//! it: `calls export` (CSV or JSON Lines), `calls export --with-audio` (a tar
//! archive with the recordings) or `reports export`. `courtline records
//! verify-export` and the console's upload on the Integrity page both use it,
//! so a file passes or fails the same way in both.

use std::io::BufRead;

use super::export::{is_archive, verify_archive, verify_export, ExportCheck, ExportError};
use super::report_export::{is_report_export, verify_report_export};

/// Bytes enough to tell the kinds apart (a tar header is 512).
pub const SNIFF_BYTES: usize = 512;

/// The kinds of export file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// `calls export` (CSV or JSON Lines).
    Calls,
    /// `calls export --with-audio` (tar).
    Archive,
    /// `reports export` (CSV or JSON).
    Reports,
}

impl ExportKind {
    /// The kind of a file that starts with `start` (its first [`SNIFF_BYTES`]).
    pub fn of(start: &[u8]) -> ExportKind {
        if is_archive(start) {
            return ExportKind::Archive;
        }
        let text = String::from_utf8_lossy(start);
        if is_report_export(text.lines().next().unwrap_or_default()) {
            ExportKind::Reports
        } else {
            ExportKind::Calls
        }
    }

    /// What its rows are called in messages.
    pub fn rows_name(self) -> &'static str {
        match self {
            ExportKind::Reports => "reports",
            ExportKind::Calls | ExportKind::Archive => "rows",
        }
    }

    /// Checks `reader`, a file of this kind; `trusted` pins the signing key.
    pub fn check(
        self,
        reader: impl BufRead,
        trusted: Option<[u8; 32]>,
    ) -> Result<ExportCheck, ExportError> {
        match self {
            ExportKind::Calls => verify_export(reader, trusted),
            ExportKind::Archive => verify_archive(reader, trusted),
            ExportKind::Reports => verify_report_export(reader, trusted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_from_the_first_bytes() {
        let mut tar = vec![0u8; SNIFF_BYTES];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(ExportKind::of(&tar), ExportKind::Archive);
        assert_eq!(ExportKind::of(b"report_id,call_id\n"), ExportKind::Reports);
        assert_eq!(ExportKind::of(b"{\n  \"reports\": []"), ExportKind::Reports);
        assert_eq!(ExportKind::of(b"call_id,received_at\n"), ExportKind::Calls);
        assert_eq!(ExportKind::of(b"{\"call_id\":\"x\"}\n"), ExportKind::Calls);
    }
}
