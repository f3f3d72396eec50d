//! Encodings DuckDB does not read or write itself, transcoded as a stream
//! (never the whole file in memory) through a temp file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::Compression;
use crate::error::{Error, Result};

/// How a CSV's text is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// DuckDB reads it natively (`utf-8`, `latin-1`, `utf-16`).
    Native(&'static str),
    /// Rust transcodes it.
    Transcoded(&'static encoding_rs::Encoding),
}

impl TextEncoding {
    /// Parses a Python-style encoding name.
    pub fn parse(name: &str) -> Result<TextEncoding> {
        let lower = name.trim().to_ascii_lowercase().replace('_', "-");
        match lower.as_str() {
            "utf-8" | "utf8" | "utf-8-sig" | "utf8-sig" => Ok(TextEncoding::Native("utf-8")),
            "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" | "l1" => {
                Ok(TextEncoding::Native("latin-1"))
            }
            "utf-16" | "utf16" => Ok(TextEncoding::Native("utf-16")),
            other => {
                let label = match other {
                    "cp1252" => "windows-1252",
                    "cp1250" => "windows-1250",
                    "cp1251" => "windows-1251",
                    "utf-16le" | "utf-16-le" => "utf-16le",
                    "utf-16be" | "utf-16-be" => "utf-16be",
                    l => l,
                };
                encoding_rs::Encoding::for_label(label.as_bytes())
                    .map(TextEncoding::Transcoded)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "encoding {name:?} is not known; use e.g. \"utf-8\", \"latin-1\", \
                             \"cp1252\", \"utf-16\""
                        ))
                    })
            }
        }
    }
}

fn open_decompressed(path: &Path, compression: Compression) -> Result<Box<dyn Read>> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?,
        ),
    })
}

/// Streams `src` (decompressed) in `encoding` into UTF-8 at `dst` (a BOM is dropped).
pub fn transcode_to_utf8(
    src: &Path,
    compression: Compression,
    encoding: &'static encoding_rs::Encoding,
    dst: &Path,
) -> Result<u64> {
    let input = open_decompressed(src, compression)?;
    let mut decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding(Some(encoding))
        .bom_override(true)
        .build(input);
    let out = File::create(dst).map_err(|e| Error::io(format!("creating {}", dst.display()), e))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let n = std::io::copy(&mut decoded, &mut out)
        .map_err(|e| Error::io(format!("transcoding {}", src.display()), e))?;
    out.flush()
        .map_err(|e| Error::io(format!("writing {}", dst.display()), e))?;
    Ok(n)
}

/// Streams UTF-8 `src` into `encoding` at `dst`; characters the encoding
/// lacks are an error naming the first one.
pub fn transcode_from_utf8(
    src: &Path,
    encoding: &'static encoding_rs::Encoding,
    dst: &Path,
    compression: Compression,
) -> Result<()> {
    let mut input = BufReader::with_capacity(
        1 << 20,
        File::open(src).map_err(|e| Error::io(format!("opening {}", src.display()), e))?,
    );
    let file =
        File::create(dst).map_err(|e| Error::io(format!("creating {}", dst.display()), e))?;
    let mut out: Box<dyn Write> = match compression {
        Compression::None => Box::new(BufWriter::with_capacity(1 << 20, file)),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
            BufWriter::new(file),
            flate2::Compression::default(),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::write::Encoder::new(BufWriter::new(file), 3)
                .map_err(|e| Error::io("starting zstd", e))?
                .auto_finish(),
        ),
    };
    if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
        // encoding_rs encodes UTF-16 as UTF-8 (WHATWG rules): write it here,
        // with a byte-order mark, as Python's "utf-16" codec does.
        return write_utf16(
            &mut input,
            &mut *out,
            encoding == encoding_rs::UTF_16BE,
            src,
            dst,
        );
    }
    let mut encoder = encoding.new_encoder();
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut out_buf = vec![0u8; (1 << 20) * 4 + 16];
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", src.display()), e))?;
        carry.extend_from_slice(&buf[..n]);
        let last = n == 0;
        // Encode only complete UTF-8 sequences; keep a partial tail for the next read.
        let valid_up_to = match std::str::from_utf8(&carry) {
            Ok(_) => carry.len(),
            Err(e) if e.error_len().is_none() && !last => e.valid_up_to(),
            Err(e) => {
                return Err(Error::Config(format!(
                    "{} is not valid UTF-8 at byte {}",
                    src.display(),
                    e.valid_up_to()
                )))
            }
        };
        let text = std::str::from_utf8(&carry[..valid_up_to]).expect("checked above");
        let mut start = 0;
        loop {
            let (result, read, written) =
                encoder.encode_from_utf8_without_replacement(&text[start..], &mut out_buf, last);
            out.write_all(&out_buf[..written])
                .map_err(|e| Error::io(format!("writing {}", dst.display()), e))?;
            start += read;
            match result {
                encoding_rs::EncoderResult::InputEmpty => break,
                encoding_rs::EncoderResult::OutputFull => continue,
                encoding_rs::EncoderResult::Unmappable(c) => {
                    return Err(Error::Config(format!(
                        "character {c:?} cannot be written in {}; choose another encoding",
                        encoding.name()
                    )))
                }
            }
        }
        carry.drain(..valid_up_to);
        if last {
            break;
        }
    }
    out.flush()
        .map_err(|e| Error::io(format!("writing {}", dst.display()), e))?;
    Ok(())
}

fn write_utf16(
    input: &mut dyn Read,
    out: &mut dyn Write,
    big_endian: bool,
    src: &Path,
    dst: &Path,
) -> Result<()> {
    let werr = |e| Error::io(format!("writing {}", dst.display()), e);
    out.write_all(if big_endian {
        &[0xFE, 0xFF]
    } else {
        &[0xFF, 0xFE]
    })
    .map_err(werr)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut encoded: Vec<u8> = Vec::with_capacity(2 << 20);
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", src.display()), e))?;
        carry.extend_from_slice(&buf[..n]);
        let valid = match std::str::from_utf8(&carry) {
            Ok(_) => carry.len(),
            Err(e) if e.error_len().is_none() && n > 0 => e.valid_up_to(),
            Err(e) => {
                return Err(Error::Config(format!(
                    "{} is not valid UTF-8 at byte {}",
                    src.display(),
                    e.valid_up_to()
                )))
            }
        };
        encoded.clear();
        for unit in std::str::from_utf8(&carry[..valid])
            .expect("checked")
            .encode_utf16()
        {
            encoded.extend_from_slice(&if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            });
        }
        out.write_all(&encoded).map_err(werr)?;
        carry.drain(..valid);
        if n == 0 {
            break;
        }
    }
    out.flush().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp1252_round_trips_through_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.csv");
        // "€uro,café" in cp1252: 0x80 is the euro sign, 0xE9 é.
        std::fs::write(&src, b"a,b\n\x80uro,caf\xe9\n").unwrap();
        let enc = match TextEncoding::parse("cp1252").unwrap() {
            TextEncoding::Transcoded(e) => e,
            other => panic!("{other:?}"),
        };
        let utf8 = dir.path().join("utf8.csv");
        transcode_to_utf8(&src, Compression::None, enc, &utf8).unwrap();
        assert_eq!(std::fs::read_to_string(&utf8).unwrap(), "a,b\n€uro,café\n");
        let back = dir.path().join("back.csv");
        transcode_from_utf8(&utf8, enc, &back, Compression::None).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), b"a,b\n\x80uro,caf\xe9\n");
    }

    #[test]
    fn utf16_output_has_a_bom_and_utf16_units() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.csv");
        std::fs::write(&src, "a,é\n").unwrap();
        let out = dir.path().join("out.csv");
        transcode_from_utf8(&src, encoding_rs::UTF_16LE, &out, Compression::None).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            vec![0xFF, 0xFE, b'a', 0, b',', 0, 0xE9, 0, b'\n', 0]
        );
    }

    #[test]
    fn native_and_unknown_encodings() {
        assert_eq!(
            TextEncoding::parse("UTF-8").unwrap(),
            TextEncoding::Native("utf-8")
        );
        assert_eq!(
            TextEncoding::parse("latin_1").unwrap(),
            TextEncoding::Native("latin-1")
        );
        assert!(TextEncoding::parse("klingon").is_err());
    }

    #[test]
    fn unmappable_character_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.csv");
        std::fs::write(&src, "a\n日本\n").unwrap();
        let err = transcode_from_utf8(
            &src,
            encoding_rs::WINDOWS_1252,
            &dir.path().join("o"),
            Compression::None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot be written"), "{err}");
    }
}
