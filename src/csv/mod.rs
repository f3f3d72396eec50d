//! The CSV drivers: the extractor (file → table) and the writer (table →
//! file). DuckDB parses and writes; Rust resolves paths, plans the SQL,
//! transcodes encodings DuckDB lacks, maps errors and keeps output atomic.

mod encoding;
mod extractor;
mod writer;

pub use encoding::{transcode_from_utf8, transcode_to_utf8, TextEncoding};
pub use extractor::{run_extract, sniff_columns, uncompressed_text_table, ExtractorConfig};
pub use writer::{run_write, WritePlan, WriterConfig};

use std::path::{Path, PathBuf};

use crate::backend::StepContext;
use crate::error::{Error, Result};

/// Resolves an input path: relative paths are looked up in the ctx's
/// `base_path` first (when the file is there), else the working directory.
pub fn resolve_input(path: &str, ctx: &dyn StepContext) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    if let Some(base) = ctx.base_path() {
        let candidate = base.join(p);
        if candidate.exists() {
            return candidate;
        }
    }
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Compression of a file, from the config or the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a config value (`infer`, `gzip`, `zstd`, `none`) and the path.
    pub fn resolve(value: &str, path: &Path) -> Result<Compression> {
        match value {
            "infer" | "auto" => Ok(Self::from_extension(path)),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(Error::Config(format!(
                "compression {other:?} is not valid; use \"infer\", \"gzip\", \"zstd\" or \"none\""
            ))),
        }
    }

    pub fn from_extension(path: &Path) -> Compression {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("gz") | Some("gzip") => Compression::Gzip,
            Some("zst") | Some("zstd") => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// DuckDB's name for it.
    pub fn duckdb_name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// A DuckDB CSV failure as a `CsvError` naming the file and, when DuckDB
/// says it, the line.
pub fn csv_error(step_id: &str, path: &Path, err: Error) -> Error {
    let text = err.to_string();
    let is_csv = text.contains("CSV Error")
        || text.contains("Invalid unicode")
        || text.contains("sniff")
        || text.contains("Error when converting column");
    if !is_csv {
        return err;
    }
    let line = text
        .find("Line: ")
        .map(|i| &text[i + 6..])
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<u64>().ok());
    // DuckDB's message is long; keep its first lines, which say what and where.
    let detail: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Possible") && !l.starts_with("* "))
        .take(4)
        .collect();
    Error::Csv {
        path: path.to_path_buf(),
        line,
        message: format!(
            "Step {step_id}: {}. Fix the file, or set on_bad_lines to \"skip\" or \"reject\" \
             to load the other rows",
            detail.join(" | ")
        ),
    }
}

/// The field count of the first non-empty record after `skip_lines` lines.
pub fn first_record_fields(
    path: &Path,
    compression: Compression,
    delimiter: u8,
    quote: u8,
    skip_lines: u64,
) -> Option<usize> {
    scan_records(path, compression, delimiter, quote, skip_lines, true).map(|(_, n, _)| n)
}

/// Finds the first record whose field count differs from the first
/// record's, scanning the (decompressed) file as a stream with CSV quoting.
/// Returns its 1-based physical line and the counts. Used when DuckDB's
/// sniffer gives up without naming a line.
pub fn find_ragged_line(
    path: &Path,
    compression: Compression,
    delimiter: u8,
    quote: u8,
    skip_lines: u64,
) -> Option<(u64, usize, usize)> {
    scan_records(path, compression, delimiter, quote, skip_lines, false)
}

/// Walks the records; with `first_only`, returns `(line, fields, fields)`
/// for the first record, else the first record whose field count differs
/// from the first one's as `(line, expected, found)`.
fn scan_records(
    path: &Path,
    compression: Compression,
    delimiter: u8,
    quote: u8,
    skip_lines: u64,
    first_only: bool,
) -> Option<(u64, usize, usize)> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut input: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader).ok()?),
    };
    let mut buf = vec![0u8; 1 << 20];
    let (mut line, mut record_line) = (1u64, 1u64);
    let (mut in_quotes, mut fields, mut expected) = (false, 1usize, None::<usize>);
    let (mut empty_record, mut prev_cr) = (true, false);
    loop {
        let n = input.read(&mut buf).ok()?;
        let chunk = &buf[..n];
        let at_end = n == 0;
        let mut end_record =
            |line_of_record: u64, fields: usize, empty: bool| -> Option<(u64, usize, usize)> {
                if empty || line_of_record <= skip_lines {
                    return None;
                }
                match expected {
                    None if first_only => Some((line_of_record, fields, fields)),
                    None => {
                        expected = Some(fields);
                        None
                    }
                    Some(e) if e != fields => Some((line_of_record, e, fields)),
                    _ => None,
                }
            };
        if at_end {
            return if empty_record {
                None
            } else {
                end_record(record_line, fields, false)
            };
        }
        for &b in chunk {
            if in_quotes {
                if b == quote {
                    in_quotes = false;
                } else if b == b'\n' {
                    line += 1;
                }
                continue;
            }
            match b {
                b'\n' if prev_cr => {
                    prev_cr = false;
                    continue;
                }
                b'\n' | b'\r' => {
                    prev_cr = b == b'\r';
                    if let Some(hit) = end_record(record_line, fields, empty_record) {
                        return Some(hit);
                    }
                    line += 1;
                    record_line = line;
                    fields = 1;
                    empty_record = true;
                    continue;
                }
                _ if b == quote => in_quotes = true,
                _ if b == delimiter => fields += 1,
                _ => {}
            }
            prev_cr = false;
            empty_record = false;
        }
    }
}

/// A file removed when dropped (transcoded or downloaded copies).
pub(crate) struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Downloads a remote source (`s3://`, `http(s)://`) into the step's temp
/// folder as a stream; Ctrl-C stops it. The copy is removed when dropped.
pub(crate) fn fetch_remote(
    url: &str,
    options: &crate::remote::StorageOptions,
    ctx: &dyn StepContext,
) -> Result<TempFile> {
    let dir = ctx.temp_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating the temp folder {}", dir.display()), e))?;
    log::info!("Downloading {}", crate::remote::redact(url));
    let cancelled = || ctx.check_cancel().is_err();
    Ok(TempFile(crate::remote::download(
        url, options, &dir, &cancelled,
    )?))
}

/// A CSV error about a downloaded copy, told about the URL instead.
pub(crate) fn name_the_url(err: Error, url: &str) -> Error {
    match err {
        Error::Csv { line, message, .. } => Error::Csv {
            path: PathBuf::from(crate::remote::redact(url)),
            line,
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_line_is_found_past_quoted_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.csv");
        std::fs::write(&f, "a,b\r\n1,\"x,\r\ny\"\r\n\r\n2,3\r\n4,5,6\r\n").unwrap();
        assert_eq!(
            find_ragged_line(&f, Compression::None, b',', b'"', 0),
            Some((6, 2, 3))
        );
        std::fs::write(&f, "a,b\n1,2\n").unwrap();
        assert_eq!(find_ragged_line(&f, Compression::None, b',', b'"', 0), None);
    }

    #[test]
    fn compression_is_inferred_from_the_extension() {
        assert_eq!(
            Compression::resolve("infer", Path::new("a.csv.gz")).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::resolve("infer", Path::new("a.csv.zst")).unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::resolve("infer", Path::new("a.csv")).unwrap(),
            Compression::None
        );
        assert!(Compression::resolve("bz2", Path::new("a.csv")).is_err());
    }

    #[test]
    fn duckdb_csv_errors_become_csv_errors_with_the_line() {
        let duck = Error::Arrow(
            "Invalid Input Error: CSV Error on Line: 3\nOriginal Line: 3,4,5\nExpected Number of Columns: 2 Found: 3"
                .into(),
        );
        match csv_error("crm", Path::new("/d/crm.csv"), duck) {
            Error::Csv {
                path,
                line,
                message,
            } => {
                assert_eq!(path, PathBuf::from("/d/crm.csv"));
                assert_eq!(line, Some(3));
                assert!(message.starts_with("Step crm: "), "{message}");
            }
            other => panic!("expected a CsvError, got {other}"),
        }
    }
}
