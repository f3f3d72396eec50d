//! Remote sources and targets: `s3://bucket/key` and `http(s)://…`.
//!
//! DuckDB only ever sees local files: [`download`] streams an object into the
//! session's temp folder chunk by chunk (bounded memory), and [`upload`] sends
//! a finished local file to S3 as a multipart upload that is aborted on any
//! failure, so no partial object is ever visible.
//!
//! Credentials and endpoint come, in order of precedence, from the
//! `storage_options` of the step config, the standard `AWS_*` environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, …) and the shared
//! AWS files (`~/.aws/credentials`, `~/.aws/config`, or the files named by
//! `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`; profile from the
//! `profile` option, `AWS_PROFILE`, else `default`).
//!
//! Secrets (secret key, session token, URL passwords and signed query
//! parameters) never appear in errors or logs: every message goes through
//! [`redact`] and a scrubber that replaces the secret values with `***`.
//!
//! Every public function blocks the calling thread: it runs its own
//! current-thread tokio runtime for the duration of the call, so it may be
//! called from any thread (but not from inside another tokio runtime).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig,
    WriteMultipart,
};

/// `storage_options` of a step config: option name → value (as strings).
pub type StorageOptions = BTreeMap<String, String>;

/// A failure reading or writing a remote object. Messages are one line, name
/// the (redacted) URL and never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The bucket or the object does not exist (HTTP 404, `NoSuchBucket`,
    /// `NoSuchKey`).
    #[error("{url}: not found (check the bucket and key)")]
    NotFound { url: String },
    /// The credentials are missing, wrong or lack the permission.
    #[error("{url}: access denied: {message}")]
    Denied { url: String, message: String },
    /// Anything else (network, server, local file, cancellation: `message` is
    /// then exactly `cancelled`).
    #[error("{url}: {message}")]
    Other { url: String, message: String },
    /// An unknown or invalid `storage_options` entry.
    #[error("invalid storage_options: {0}")]
    Options(String),
}

/// Upload part size (S3 needs ≥ 5 MiB for every part but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// S3 allows at most 10,000 parts; bigger files get bigger parts.
const MAX_PARTS: u64 = 9_000;
/// Parts uploading at once (memory held by an upload ≈ (this + 1) × part size).
const UPLOAD_CONCURRENCY: usize = 2;
/// Buffer between the network stream and the download file.
const WRITE_BUFFER: usize = 1024 * 1024;
/// How often a running download asks `cancelled()` while waiting for data.
const CANCEL_POLL: Duration = Duration::from_millis(100);

const CREDENTIALS_HINT: &str =
    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or storage_options aws_access_key_id/aws_secret_access_key";

/// True for `s3://`, `http://` and `https://` paths (scheme case-insensitive).
pub fn is_remote(path: &str) -> bool {
    strip_scheme(path, "s3").is_some()
        || strip_scheme(path, "http").is_some()
        || strip_scheme(path, "https").is_some()
}

/// `url` without credentials: the userinfo (`user:password@`) and query
/// parameters that carry secrets (`X-Amz-Signature`, `X-Amz-Credential`,
/// `X-Amz-Security-Token`, `sig`, `token`, …) are removed, the fragment too.
/// Other query parameters are kept. Works on any string (a non-URL is
/// returned unchanged).
pub fn redact(url: &str) -> String {
    // An S3 key is literal: `?` and `#` are part of it, and an s3:// URL
    // carries no credentials.
    if strip_scheme(url, "s3").is_some() {
        return url.to_string();
    }
    let without_fragment = url.split('#').next().unwrap_or_default();
    let (base, query) = match without_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (without_fragment, None),
    };
    let mut out = match base.find("://") {
        Some(i) => {
            let (scheme, rest) = (&base[..i + 3], &base[i + 3..]);
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{scheme}{host}{path}")
        }
        None => base.to_string(),
    };
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| !is_secret_param(pair.split('=').next().unwrap_or_default()))
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

/// Metadata for fingerprints: `{"url", "size", "etag", "last_modified"}` from
/// a HEAD request (`url` redacted, `etag` / `last_modified` null when the
/// server does not send them, `last_modified` as RFC 3339).
pub fn head(url: &str, opts: &StorageOptions) -> Result<serde_json::Value, RemoteError> {
    let remote = Remote::open(url, opts, Purpose::Read)?;
    let rt = runtime(&remote)?;
    let meta = rt.block_on(async {
        match remote.store.head(&remote.location).await {
            Ok(meta) => Ok(meta),
            // Some HTTP servers (and presigned GET URLs) refuse HEAD: ask
            // with a GET and drop the body unread.
            Err(err) if remote.is_http() && !is_plain_not_found(&err) => {
                match remote.store.get(&remote.location).await {
                    Ok(result) => Ok(result.meta),
                    Err(_) => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    });
    let meta = meta.map_err(|err| remote.error(&err))?;
    let last_modified = (meta.last_modified.timestamp() != 0 || remote.is_s3())
        .then(|| meta.last_modified.to_rfc3339());
    Ok(serde_json::json!({
        "url": remote.display_url,
        "size": meta.size,
        "etag": meta.e_tag,
        "last_modified": last_modified,
    }))
}

/// Streams the object into a new file in `dir` named `<uuid>-<basename of the
/// key>` (so the extension, e.g. `.csv.gz`, is kept) and returns its path.
/// Memory use is bounded (one network chunk plus a 1 MiB write buffer). The
/// partial file is deleted on any error. `cancelled()` is polled between
/// chunks (and every 100 ms while waiting for the server); when it returns
/// true the download stops with `RemoteError::Other { message: "cancelled" }`.
pub fn download(
    url: &str,
    opts: &StorageOptions,
    dir: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<PathBuf, RemoteError> {
    let remote = Remote::open(url, opts, Purpose::Read)?;
    let local_err = |what: &str, err: std::io::Error| RemoteError::Other {
        url: remote.display_url.clone(),
        message: remote.scrub(&format!("{what}: {err}")),
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| local_err(&format!("cannot create {}", dir.display()), e))?;
    let dest = dir.join(format!(
        "{}-{}",
        uuid::Uuid::new_v4(),
        local_file_name(&remote.basename)
    ));
    log::debug!("downloading {} to {}", remote.display_url, dest.display());
    let rt = runtime(&remote)?;
    let result = rt.block_on(async {
        let copy = copy_to_file(&remote, &dest, cancelled);
        let watch = async {
            loop {
                if cancelled() {
                    break;
                }
                tokio::time::sleep(CANCEL_POLL).await;
            }
        };
        tokio::select! {
            biased;
            _ = watch => Err(remote.cancelled()),
            result = copy => result,
        }
    });
    match result {
        Ok(bytes) => {
            log::debug!("downloaded {} ({bytes} bytes)", remote.display_url);
            Ok(dest)
        }
        Err(err) => {
            let _ = std::fs::remove_file(&dest);
            Err(err)
        }
    }
}

/// Uploads the local file `local` to `url` (`s3://` only) with a multipart
/// upload (parts of 8 MiB, bigger for files over ~70 GB). On any error the
/// multipart upload is aborted, so no object (and no orphaned part) is left
/// behind; an existing object at `url` is replaced only on success.
pub fn upload(local: &Path, url: &str, opts: &StorageOptions) -> Result<(), RemoteError> {
    let remote = Remote::open(url, opts, Purpose::Write)?;
    if remote.is_http() {
        return Err(RemoteError::Other {
            url: remote.display_url,
            message: "HTTP(S) locations are read-only; write to an s3:// URL or a local path"
                .into(),
        });
    }
    let file = File::open(local).map_err(|e| RemoteError::Other {
        url: remote.display_url.clone(),
        message: remote.scrub(&format!("cannot read {}: {e}", local.display())),
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    log::debug!(
        "uploading {} ({size} bytes) to {}",
        local.display(),
        remote.display_url
    );
    let rt = runtime(&remote)?;
    rt.block_on(upload_reader(&remote, file, part_size(size)))?;
    log::debug!("uploaded {}", remote.display_url);
    Ok(())
}

// --- internals --------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Purpose {
    Read,
    Write,
}

/// One remote object: its store, key and what may be shown of it.
struct Remote {
    store: Arc<dyn ObjectStore>,
    location: ObjectPath,
    kind: Kind,
    /// The URL as shown in messages and logs ([`redact`]ed).
    display_url: String,
    /// Last segment of the key / URL path (for the download's file name).
    basename: String,
    /// Values that must never be shown (replaced by `***` in messages).
    secrets: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    S3,
    Http,
}

/// A parsed remote URL.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    S3 { bucket: String, key: String },
    Http { url: url::Url },
}

impl Remote {
    fn open(url: &str, opts: &StorageOptions, purpose: Purpose) -> Result<Remote, RemoteError> {
        Self::open_with_env(url, opts, purpose, &Env::from_process())
    }

    fn open_with_env(
        url: &str,
        opts: &StorageOptions,
        purpose: Purpose,
        env: &Env,
    ) -> Result<Remote, RemoteError> {
        // reqwest is built without a TLS crypto provider (no aws-lc C
        // build): install ring's for the whole process, before any client.
        static PROVIDER: std::sync::Once = std::sync::Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let display_url = redact(url);
        let parsed = parse_options(opts)?;
        match parse_target(url)? {
            Target::S3 { bucket, key } => {
                let config = S3Config::resolve(&parsed, env)?;
                let location = object_path(&key, &display_url)?;
                let store = config.build(&bucket, purpose, &display_url)?;
                Ok(Remote {
                    store,
                    location,
                    kind: Kind::S3,
                    basename: key.rsplit('/').next().unwrap_or_default().to_string(),
                    display_url,
                    secrets: config.secrets(),
                })
            }
            Target::Http { url } => {
                let basename = url
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .map(percent_decode)
                    .unwrap_or_default();
                let mut secrets: Vec<String> = url
                    .password()
                    .map(|p| vec![p.to_string(), percent_decode(p)])
                    .unwrap_or_default();
                secrets.extend(
                    url.query_pairs()
                        .filter(|(k, _)| is_secret_param(k))
                        .map(|(_, v)| v.into_owned()),
                );
                let mut client = client_options(&parsed, purpose);
                if url.scheme() == "http" {
                    client = client.with_allow_http(true);
                }
                // The whole URL (query included) is the store's base: the
                // object is its empty path, so signed query strings survive.
                let store = HttpBuilder::new()
                    .with_url(url.as_str())
                    .with_client_options(client)
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| RemoteError::Options(scrub(&e.to_string(), &secrets)))?;
                Ok(Remote {
                    store: Arc::new(store),
                    location: ObjectPath::default(),
                    kind: Kind::Http,
                    display_url,
                    basename,
                    secrets,
                })
            }
        }
    }

    fn is_http(&self) -> bool {
        self.kind == Kind::Http
    }

    fn is_s3(&self) -> bool {
        self.kind == Kind::S3
    }

    fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }

    fn cancelled(&self) -> RemoteError {
        RemoteError::Other {
            url: self.display_url.clone(),
            message: "cancelled".into(),
        }
    }

    /// Maps an object_store error to a one-line [`RemoteError`].
    fn error(&self, err: &object_store::Error) -> RemoteError {
        classify(err, &self.display_url, self.kind, &self.secrets)
    }
}

/// Streams the object into `dest`; returns the number of bytes written.
async fn copy_to_file(
    remote: &Remote,
    dest: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<u64, RemoteError> {
    let io_err = |e: std::io::Error| RemoteError::Other {
        url: remote.display_url.clone(),
        message: remote.scrub(&format!("cannot write {}: {e}", dest.display())),
    };
    let result = remote
        .store
        .get(&remote.location)
        .await
        .map_err(|e| remote.error(&e))?;
    let expected = result.range.end - result.range.start;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, File::create(dest).map_err(io_err)?);
    let mut stream = result.into_stream();
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        if cancelled() {
            return Err(remote.cancelled());
        }
        let chunk = chunk.map_err(|e| remote.error(&e))?;
        out.write_all(&chunk).map_err(io_err)?;
        written += chunk.len() as u64;
    }
    out.into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    if written != expected {
        return Err(RemoteError::Other {
            url: remote.display_url.clone(),
            message: format!("download incomplete: got {written} of {expected} bytes"),
        });
    }
    Ok(written)
}

/// Multipart upload of everything `reader` yields; aborts the upload (so
/// nothing is left on the server) when the reader or any request fails.
async fn upload_reader(
    remote: &Remote,
    mut reader: impl Read,
    part_size: usize,
) -> Result<(), RemoteError> {
    let upload = remote
        .store
        .put_multipart(&remote.location)
        .await
        .map_err(|e| remote.error(&e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
    let mut buf = vec![0u8; WRITE_BUFFER];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                abort(writer, remote).await;
                return Err(RemoteError::Other {
                    url: remote.display_url.clone(),
                    message: remote.scrub(&format!(
                        "reading the local file failed, upload aborted: {e}"
                    )),
                });
            }
        };
        // Back pressure: at most UPLOAD_CONCURRENCY parts in flight.
        if let Err(e) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
            abort(writer, remote).await;
            return Err(remote.error(&e));
        }
        writer.write(&buf[..n]);
        // Let the part uploads spawned on this current-thread runtime run.
        tokio::task::yield_now().await;
    }
    // `finish` aborts the multipart upload itself when a part or the
    // completion fails.
    writer.finish().await.map_err(|e| remote.error(&e))?;
    Ok(())
}

async fn abort(writer: WriteMultipart, remote: &Remote) {
    if let Err(e) = writer.abort().await {
        log::warn!(
            "{}: aborting the multipart upload failed: {}",
            remote.display_url,
            remote.scrub(&e.to_string())
        );
    }
}

fn part_size(file_size: u64) -> usize {
    let needed = file_size.div_ceil(MAX_PARTS);
    (PART_SIZE as u64).max(needed) as usize
}

fn runtime(remote: &Remote) -> Result<tokio::runtime::Runtime, RemoteError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RemoteError::Other {
            url: remote.display_url.clone(),
            message: format!("cannot start the I/O runtime: {e}"),
        })
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        // object_store's default is 10 (≈ a minute before a refused
        // connection is reported); 5 keeps transient-error resilience.
        max_retries: 5,
        retry_timeout: Duration::from_secs(180),
    }
}

/// Client options from `storage_options` (client keys only) with timeouts
/// fit for big transfers: object_store's default 30 s limit covers a whole
/// request, body included, which a large download would exceed.
fn client_options(parsed: &ParsedOptions, purpose: Purpose) -> ClientOptions {
    let mut options = ClientOptions::new();
    for (key, value) in &parsed.client {
        options = options.with_config(*key, value);
    }
    if !parsed.client.contains_key(&ClientConfigKey::Timeout) {
        options = match purpose {
            Purpose::Read => options.with_timeout_disabled(),
            Purpose::Write => options.with_timeout(Duration::from_secs(300)),
        };
    }
    if !parsed.client.contains_key(&ClientConfigKey::ReadTimeout) {
        options = options.with_read_timeout(Duration::from_secs(120));
    }
    options
}

// --- URLs ---------------------------------------------------------------------

fn strip_scheme<'a>(path: &'a str, scheme: &str) -> Option<&'a str> {
    let n = scheme.len();
    (path.len() >= n + 3
        && path.is_char_boundary(n)
        && path[..n].eq_ignore_ascii_case(scheme)
        && &path[n..n + 3] == "://")
        .then(|| &path[n + 3..])
}

fn parse_target(url: &str) -> Result<Target, RemoteError> {
    let invalid = |message: String| RemoteError::Other {
        url: redact(url),
        message,
    };
    if let Some(rest) = strip_scheme(url, "s3") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
            return Err(invalid(
                "an S3 location must look like s3://bucket/path/to/file".into(),
            ));
        }
        return Ok(Target::S3 {
            bucket: bucket.to_string(),
            key: key.to_string(),
        });
    }
    if strip_scheme(url, "http").is_some() || strip_scheme(url, "https").is_some() {
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("not a valid URL ({e})")))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host".into()));
        }
        return Ok(Target::Http { url: parsed });
    }
    Err(invalid(
        "not a remote location (expected s3://, http:// or https://)".into(),
    ))
}

fn object_path(key: &str, display_url: &str) -> Result<ObjectPath, RemoteError> {
    ObjectPath::parse(key).map_err(|_| RemoteError::Other {
        url: display_url.to_string(),
        message:
            "unsupported object key (empty segments such as a//b, '.' or '..' are not allowed)"
                .into(),
    })
}

fn is_secret_param(name: &str) -> bool {
    let lower = percent_decode(name).to_ascii_lowercase();
    const PARTS: [&str; 12] = [
        "signature",
        "token",
        "credential",
        "secret",
        "password",
        "passwd",
        "apikey",
        "api_key",
        "api-key",
        "access_key",
        "accesskey",
        "auth",
    ];
    PARTS.iter().any(|p| lower.contains(p)) || matches!(lower.as_str(), "sig" | "key" | "pwd")
}

fn percent_decode(text: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A file-system-safe name ending like `basename` (extension kept).
fn local_file_name(basename: &str) -> String {
    let cleaned: String = basename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    let tail: String = {
        let chars: Vec<char> = cleaned.chars().collect();
        chars[chars.len().saturating_sub(120)..].iter().collect()
    };
    if tail.is_empty() {
        "download".into()
    } else {
        tail
    }
}

// --- options ------------------------------------------------------------------

/// The keys most configs need; any other object_store S3 / client key works too.
const VALID_KEYS: &str = "aws_access_key_id, aws_secret_access_key, aws_session_token, \
    aws_region (region), aws_endpoint_url (endpoint_url, aws_endpoint, endpoint), \
    aws_allow_http (allow_http), aws_skip_signature (skip_signature), profile (aws_profile), \
    aws_virtual_hosted_style_request, aws_unsigned_payload, aws_checksum_algorithm, \
    aws_request_payer, aws_metadata_endpoint, aws_web_identity_token_file, aws_role_arn, \
    allow_invalid_certificates, timeout, connect_timeout, read_timeout, proxy_url, user_agent \
    (and any other object_store AmazonS3ConfigKey / ClientConfigKey name)";

/// `storage_options` checked and split: S3 keys, client keys, the profile.
#[derive(Debug, Default)]
struct ParsedOptions {
    s3: Vec<(AmazonS3ConfigKey, String)>,
    client: std::collections::HashMap<ClientConfigKey, String>,
    profile: Option<String>,
}

impl ParsedOptions {
    fn get(&self, key: &AmazonS3ConfigKey) -> Option<&str> {
        match key {
            AmazonS3ConfigKey::Client(c) => self.client.get(c).map(String::as_str),
            _ => self
                .s3
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str()),
        }
    }
}

fn parse_option_key(name: &str) -> Result<Option<AmazonS3ConfigKey>, RemoteError> {
    let normalized = name.trim().to_ascii_lowercase();
    if matches!(normalized.as_str(), "profile" | "aws_profile") {
        return Ok(None);
    }
    // object_store's parser knows every S3 key with and without the `aws_`
    // prefix, `region`, `endpoint_url`, `aws_endpoint_url`, and falls back
    // to the client keys (`allow_http`, `timeout`, …).
    normalized
        .parse::<AmazonS3ConfigKey>()
        .map(Some)
        .map_err(|_| {
            RemoteError::Options(format!(
                "unknown option {name:?}; valid options: {VALID_KEYS}"
            ))
        })
}

fn parse_options(opts: &StorageOptions) -> Result<ParsedOptions, RemoteError> {
    let mut parsed = ParsedOptions::default();
    for (name, value) in opts {
        match parse_option_key(name)? {
            None => parsed.profile = Some(value.clone()),
            Some(AmazonS3ConfigKey::Client(key)) => {
                parsed.client.insert(key, value.clone());
            }
            Some(key) => parsed.s3.push((key, value.clone())),
        }
    }
    Ok(parsed)
}

/// A snapshot of the environment variables this module reads.
#[derive(Debug, Default, Clone)]
struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    fn from_process() -> Env {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("AWS_") || k == "HOME" || k == "USERPROFILE")
            .collect();
        Env { vars }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        self.get("HOME")
            .or_else(|| self.get("USERPROFILE"))
            .map(PathBuf::from)
    }
}

/// The resolved S3 settings: env and shared files, then the options on top.
struct S3Config {
    builder: AmazonS3Builder,
    /// Client options (timeouts, allow_http, …) from env and storage_options.
    client: ParsedOptions,
}

impl S3Config {
    fn resolve(opts: &ParsedOptions, env: &Env) -> Result<S3Config, RemoteError> {
        let mut builder = AmazonS3Builder::new();
        let mut client = ParsedOptions::default();
        // 1. AWS_* environment variables (what AmazonS3Builder::from_env
        //    does, from the snapshot).
        for (name, value) in &env.vars {
            if !name.starts_with("AWS_") || value.is_empty() {
                continue;
            }
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                match key {
                    AmazonS3ConfigKey::Client(c) => {
                        client.client.insert(c, value.clone());
                    }
                    key => builder = builder.with_config(key, value),
                }
            }
        }
        // 2. The shared AWS files fill what env and options leave unset.
        let profile = opts
            .profile
            .clone()
            .or_else(|| env.get("AWS_PROFILE").map(str::to_string))
            .unwrap_or_else(|| "default".into());
        let unset = |builder: &AmazonS3Builder, key: AmazonS3ConfigKey| {
            builder.get_config_value(&key).is_none() && opts.get(&key).is_none()
        };
        if unset(&builder, AmazonS3ConfigKey::AccessKeyId)
            && unset(&builder, AmazonS3ConfigKey::SecretAccessKey)
        {
            let file = env
                .get("AWS_SHARED_CREDENTIALS_FILE")
                .map(PathBuf::from)
                .or_else(|| env.home().map(|h| h.join(".aws").join("credentials")));
            if let Some(section) = file.and_then(|f| read_ini_section(&f, &profile, false)) {
                for (name, key) in [
                    ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
                    ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
                    ("aws_session_token", AmazonS3ConfigKey::Token),
                ] {
                    if let Some(v) = section.get(name) {
                        builder = builder.with_config(key, v);
                    }
                }
            } else if opts.profile.is_some() {
                return Err(RemoteError::Options(format!(
                    "profile {profile:?} not found in the shared AWS credentials file"
                )));
            }
        }
        let config_file = env
            .get("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| env.home().map(|h| h.join(".aws").join("config")));
        if let Some(section) = config_file.and_then(|f| read_ini_section(&f, &profile, true)) {
            for (name, key) in [
                ("region", AmazonS3ConfigKey::Region),
                ("endpoint_url", AmazonS3ConfigKey::Endpoint),
            ] {
                if let Some(v) = section.get(name) {
                    if unset(&builder, key) {
                        builder = builder.with_config(key, v);
                    }
                }
            }
        }
        // 3. storage_options override everything.
        for (key, value) in &opts.s3 {
            builder = builder.with_config(*key, value);
        }
        for (key, value) in &opts.client {
            client.client.insert(*key, value.clone());
        }
        // An http:// endpoint (moto, MinIO, …) needs plain HTTP allowed.
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        if endpoint
            .as_deref()
            .is_some_and(|e| strip_scheme(e, "http").is_some())
            && !client.client.contains_key(&ClientConfigKey::AllowHttp)
        {
            client
                .client
                .insert(ClientConfigKey::AllowHttp, "true".into());
        }
        let config = S3Config { builder, client };
        config.check_credentials()?;
        Ok(config)
    }

    fn value(&self, key: AmazonS3ConfigKey) -> Option<String> {
        self.builder
            .get_config_value(&key)
            .filter(|v| !v.is_empty())
    }

    /// Fails fast when no credential source is configured, instead of
    /// letting object_store fall back to the EC2 instance-metadata endpoint
    /// (which hangs for a long time off EC2). Opt in to instance credentials
    /// by setting `aws_metadata_endpoint` (AWS_METADATA_ENDPOINT).
    fn check_credentials(&self) -> Result<(), RemoteError> {
        use AmazonS3ConfigKey as K;
        let id = self.value(K::AccessKeyId).is_some();
        let secret = self.value(K::SecretAccessKey).is_some();
        if id != secret {
            let missing = if id {
                "aws_secret_access_key (AWS_SECRET_ACCESS_KEY)"
            } else {
                "aws_access_key_id (AWS_ACCESS_KEY_ID)"
            };
            return Err(RemoteError::Options(format!(
                "{missing} is missing: give both the access key id and the secret access key"
            )));
        }
        let skip = self
            .value(K::SkipSignature)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let other_source = (self.value(K::WebIdentityTokenFile).is_some()
            && self.value(K::RoleArn).is_some())
            || self.value(K::ContainerCredentialsRelativeUri).is_some()
            || self.value(K::ContainerCredentialsFullUri).is_some()
            || self.value(K::MetadataEndpoint).is_some();
        if id || skip || other_source {
            Ok(())
        } else {
            Err(RemoteError::Options(format!(
                "no AWS credentials found: {CREDENTIALS_HINT} (or a profile in ~/.aws/credentials); \
                 for a public bucket set storage_options skip_signature=true"
            )))
        }
    }

    fn secrets(&self) -> Vec<String> {
        [AmazonS3ConfigKey::SecretAccessKey, AmazonS3ConfigKey::Token]
            .into_iter()
            .filter_map(|k| self.value(k))
            .collect()
    }

    fn build(
        &self,
        bucket: &str,
        purpose: Purpose,
        display_url: &str,
    ) -> Result<Arc<dyn ObjectStore>, RemoteError> {
        let store = self
            .builder
            .clone()
            .with_bucket_name(bucket)
            .with_client_options(client_options(&self.client, purpose))
            .with_retry(retry_config())
            .build()
            .map_err(|e| {
                RemoteError::Options(format!(
                    "{} (for {display_url})",
                    scrub(&e.to_string(), &self.secrets())
                ))
            })?;
        Ok(Arc::new(store))
    }
}

/// Never prints the builder: its Debug output contains the secret key.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3Config { .. }")
    }
}

/// `key = value` pairs of one profile of an AWS shared file: `[name]` in the
/// credentials file; `[default]` or `[profile name]` in the config file.
fn read_ini_section(
    path: &Path,
    profile: &str,
    config_file: bool,
) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let wanted: Vec<String> = if config_file && profile != "default" {
        vec![format!("profile {profile}")]
    } else {
        vec![profile.to_string()]
    };
    let mut section: Option<BTreeMap<String, String>> = None;
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            inside = wanted.contains(&name);
            if inside {
                section.get_or_insert_with(BTreeMap::new);
            }
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                if let Some(s) = section.as_mut() {
                    s.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
        }
    }
    section
}

// --- errors -------------------------------------------------------------------

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The HTTP status in an object_store error text (`… status code: 403 …`).
fn status_of(text: &str) -> Option<u16> {
    let rest = &text[text.find("status code: ")? + "status code: ".len()..];
    rest.get(..3)?.parse().ok()
}

/// A 404 that really means "no such object" (not a 405 turned into
/// NotFound by object_store's HTTP store).
fn is_plain_not_found(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::NotFound { .. })
        && status_of(&err.to_string()).is_none_or(|s| s == 404)
}

const DENIED_CODES: [&str; 8] = [
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
];

fn classify(err: &object_store::Error, url: &str, kind: Kind, secrets: &[String]) -> RemoteError {
    let text = err.to_string();
    let status = status_of(&text);
    let code = between(&text, "<Code>", "</Code>");
    let detail = between(&text, "<Message>", "</Message>");
    let not_found = match err {
        object_store::Error::NotFound { .. } => status.is_none_or(|s| s == 404),
        _ => status == Some(404) || matches!(code, Some("NoSuchBucket" | "NoSuchKey")),
    };
    if not_found {
        return RemoteError::NotFound { url: url.into() };
    }
    let denied = matches!(
        err,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || matches!(status, Some(401 | 403))
        || code.is_some_and(|c| DENIED_CODES.contains(&c));
    if denied {
        let what = match (code, detail) {
            (Some(code), Some(detail)) => format!("{code}: {}", detail.trim_end_matches('.')),
            (Some(code), None) => code.to_string(),
            _ => format!("the server answered HTTP {}", status.unwrap_or(403)),
        };
        let hint = match kind {
            Kind::S3 => format!("check the credentials ({CREDENTIALS_HINT}) and the bucket policy"),
            Kind::Http => "the server refused the request".into(),
        };
        return RemoteError::Denied {
            url: url.into(),
            message: scrub(&format!("{what}; {hint}"), secrets),
        };
    }
    let message = match (code, detail) {
        (Some(code), Some(detail)) => format!("{code}: {detail}"),
        _ => short_error_text(err),
    };
    RemoteError::Other {
        url: url.into(),
        message: scrub(&message, secrets),
    }
}

/// A short description of a failure that is neither "not found" nor
/// "denied": the HTTP status or the root cause (e.g. `Connection refused`),
/// then which request failed and how often it was retried.
fn short_error_text(err: &object_store::Error) -> String {
    let text = err.to_string();
    let mut root: Option<String> = None;
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        root = Some(s.to_string());
        source = s.source();
    }
    let mut message = if let Some(i) = text.find("status code: ") {
        let status = &text[i + "status code: ".len()..];
        let status = status.split(':').next().unwrap_or(status).trim();
        format!("the server answered HTTP {status}")
    } else if let (Some(root), true) = (root, text.contains("Error performing ")) {
        format!("request failed: {root}")
    } else {
        let mut t = text.as_str();
        for prefix in [
            "Generic S3 error: ",
            "Generic HTTP error: ",
            "Generic HTTP client error: ",
        ] {
            t = t.strip_prefix(prefix).unwrap_or(t);
        }
        t.to_string()
    };
    if let Some(request) = between(&text, "Error performing ", " in ") {
        let retries = between(&text, ", after ", " retries")
            .map(|n| format!(", after {n} retries"))
            .unwrap_or_default();
        message.push_str(&format!(" ({request}{retries})"));
    }
    message
}

/// One line, URLs [`redact`]ed, secret values replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url_start(rest) {
        out.push_str(&rest[..start]);
        let url_len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .unwrap_or(rest.len() - start);
        // Punctuation right after a URL ("…/k.csv, after") is not part of it.
        let url_len = rest[start..start + url_len]
            .trim_end_matches([',', '.', ';'])
            .len();
        out.push_str(&redact(&rest[start..start + url_len]));
        rest = &rest[start + url_len..];
    }
    out.push_str(rest);
    for secret in secrets {
        if secret.len() >= 4 {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn find_url_start(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    ["http://", "https://", "s3://"]
        .iter()
        .filter_map(|s| lower.find(s))
        .min()
}

#[cfg(test)]
mod tests {
    //! Unit tests run everywhere. The integration tests (`s3_*`, `http_*`)
    //! need an S3-compatible server on loopback and skip themselves unless
    //! `REMOTE_TEST_S3_ENDPOINT` is set, e.g.
    //!
    //! ```text
    //! .venv/bin/moto_server -H 127.0.0.1 -p 5077 &
    //! REMOTE_TEST_S3_ENDPOINT=http://127.0.0.1:5077 cargo test remote::
    //! ```
    //!
    //! (`run_integration.sh` next to Cargo.toml in the scratch crate does
    //! exactly that on a free port). The HTTP tests also need `python3`
    //! (`REMOTE_TEST_PYTHON` overrides) for `python3 -m http.server`.
    //! moto only checks credentials once auth is enforced; the credential
    //! test switches that on with `POST /moto-api/reset-auth` and back off.

    use super::*;
    use std::cell::Cell;
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::RwLock;

    const SECRET: &str = "remote-test-secret-value";
    const TOKEN: &str = "remote-test-session-token";

    // --- helpers --------------------------------------------------------------

    /// Every message a test sees goes through this: one line, no secret.
    fn assert_clean(err: &RemoteError) {
        let text = err.to_string();
        for secret in [SECRET, TOKEN, "X-Amz-Signature", "hunter2"] {
            assert!(!text.contains(secret), "secret {secret:?} in: {text}");
        }
        assert!(!text.contains('\n'), "multi-line message: {text}");
    }

    fn opts(pairs: &[(&str, &str)]) -> StorageOptions {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Never read the developer's real ~/.aws in unit tests.
        vars.entry("HOME".into())
            .or_insert_with(|| "/nonexistent-home-for-tests".into());
        Env { vars }
    }

    fn resolve(o: &StorageOptions, e: &Env) -> Result<S3Config, RemoteError> {
        S3Config::resolve(&parse_options(o)?, e)
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("remote-test-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Deterministic, incompressible-looking test data.
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    // --- is_remote / redact -----------------------------------------------------

    #[test]
    fn is_remote_recognises_s3_and_http_schemes_in_any_case() {
        for yes in [
            "s3://bucket/key.csv",
            "S3://bucket/key.csv",
            "http://127.0.0.1:8000/a.csv",
            "HTTPS://example.com/a.csv",
            "Https://example.com/a.csv?x=1",
        ] {
            assert!(is_remote(yes), "{yes}");
        }
        for no in [
            "/data/crm.csv",
            "crm.csv",
            "C:\\data\\crm.csv",
            "s3:/bucket/key",
            "s3bucket/key",
            "file:///tmp/a.csv",
            "ftp://host/a.csv",
            "https:/x",
            "",
            "ś3://x/y",
        ] {
            assert!(!is_remote(no), "{no}");
        }
    }

    #[test]
    fn redact_removes_userinfo_and_signed_query_parameters() {
        assert_eq!(
            redact("https://user:hunter2@example.com/dir/a.csv"),
            "https://example.com/dir/a.csv"
        );
        assert_eq!(
            redact(
                "https://b.s3.amazonaws.com/k.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                 &X-Amz-Credential=AKIA%2F20240101&X-Amz-Date=20240101T000000Z\
                 &X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Security-Token=tok\
                 &X-Amz-Signature=abcdef"
            ),
            "https://b.s3.amazonaws.com/k.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Date=20240101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host"
        );
        assert_eq!(
            redact("https://acct.blob.core.windows.net/c/a.csv?sv=2022&sig=zzz&token=t"),
            "https://acct.blob.core.windows.net/c/a.csv?sv=2022"
        );
        assert_eq!(
            redact("http://h/a.csv?api_key=1&access_token=2#frag"),
            "http://h/a.csv"
        );
        assert_eq!(redact("s3://bucket/dir/a.csv"), "s3://bucket/dir/a.csv");
        assert_eq!(redact("s3://bucket/a#1?.csv"), "s3://bucket/a#1?.csv");
        assert_eq!(
            redact("http://h:8080/a.csv?page=2"),
            "http://h:8080/a.csv?page=2"
        );
        assert_eq!(redact("/local/path.csv"), "/local/path.csv");
    }

    #[test]
    fn scrub_redacts_urls_inside_text_and_replaces_secrets() {
        let text = format!(
            "Error performing GET https://u:hunter2@h/k?X-Amz-Signature=abc, in 3ms -\n \
             bad key {SECRET} and token {TOKEN} (see http://h/x?sig=1)."
        );
        let out = scrub(&text, &[SECRET.into(), TOKEN.into()]);
        assert_eq!(
            out,
            "Error performing GET https://h/k, in 3ms - bad key *** and token *** (see http://h/x)."
        );
    }

    // --- URL parsing ------------------------------------------------------------

    #[test]
    fn parse_target_splits_bucket_and_key() {
        assert_eq!(
            parse_target("s3://my-bucket/dir/sub/crm.csv.gz").unwrap(),
            Target::S3 {
                bucket: "my-bucket".into(),
                key: "dir/sub/crm.csv.gz".into()
            }
        );
        assert_eq!(
            parse_target("S3://b/k").unwrap(),
            Target::S3 {
                bucket: "b".into(),
                key: "k".into()
            }
        );
        for bad in ["s3://bucket", "s3://bucket/", "s3:///key", "s3://b/dir/"] {
            let err = parse_target(bad).unwrap_err();
            assert!(
                err.to_string().contains("s3://bucket/path/to/file"),
                "{bad}: {err}"
            );
        }
        match parse_target("http://127.0.0.1:9/x/crm.csv?a=1").unwrap() {
            Target::Http { url } => assert_eq!(url.path(), "/x/crm.csv"),
            other => panic!("{other:?}"),
        }
        let err = parse_target("/local/file.csv").unwrap_err();
        assert!(err.to_string().contains("not a remote location"), "{err}");
    }

    #[test]
    fn unsupported_keys_are_rejected_before_any_request() {
        let o = opts(&[
            ("aws_access_key_id", "k"),
            ("aws_secret_access_key", SECRET),
        ]);
        let err = download("s3://b/a//b.csv", &o, &temp_dir("badkey"), &|| false).unwrap_err();
        assert!(err.to_string().contains("unsupported object key"), "{err}");
        assert_clean(&err);
    }

    #[test]
    fn local_file_name_keeps_the_extension_and_is_safe() {
        assert_eq!(local_file_name("crm.csv.gz"), "crm.csv.gz");
        assert_eq!(local_file_name("my file (1).csv"), "my_file__1_.csv");
        assert_eq!(local_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(local_file_name(""), "download");
        assert_eq!(local_file_name(".hidden"), "hidden");
        let long = format!("{}.parquet", "x".repeat(500));
        let name = local_file_name(&long);
        assert_eq!(name.len(), 120);
        assert!(name.ends_with("x.parquet"));
    }

    #[test]
    fn part_size_grows_only_for_huge_files() {
        assert_eq!(part_size(0), PART_SIZE);
        assert_eq!(part_size(50 << 30), PART_SIZE);
        let huge = 200u64 << 30;
        let size = part_size(huge) as u64;
        assert!(size > PART_SIZE as u64 && huge.div_ceil(size) <= MAX_PARTS);
    }

    // --- options ----------------------------------------------------------------

    #[test]
    fn option_aliases_map_to_object_store_keys() {
        use AmazonS3ConfigKey as K;
        for (name, key) in [
            ("aws_access_key_id", K::AccessKeyId),
            ("access_key_id", K::AccessKeyId),
            ("aws_secret_access_key", K::SecretAccessKey),
            ("aws_session_token", K::Token),
            ("aws_region", K::Region),
            ("region", K::Region),
            ("AWS_REGION", K::Region),
            ("aws_endpoint", K::Endpoint),
            ("endpoint_url", K::Endpoint),
            ("aws_endpoint_url", K::Endpoint),
            ("endpoint", K::Endpoint),
            ("aws_allow_http", K::Client(ClientConfigKey::AllowHttp)),
            ("allow_http", K::Client(ClientConfigKey::AllowHttp)),
            ("timeout", K::Client(ClientConfigKey::Timeout)),
            ("skip_signature", K::SkipSignature),
        ] {
            assert_eq!(parse_option_key(name).unwrap(), Some(key), "{name}");
        }
        assert_eq!(parse_option_key("profile").unwrap(), None);
    }

    #[test]
    fn unknown_option_lists_valid_keys_and_never_the_value() {
        let err = parse_options(&opts(&[("aws_secret_acess_key", SECRET)])).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RemoteError::Options(_)));
        assert!(
            text.starts_with("invalid storage_options: unknown option \"aws_secret_acess_key\""),
            "{text}"
        );
        assert!(
            text.contains("aws_secret_access_key") && text.contains("aws_endpoint_url"),
            "{text}"
        );
        assert_clean(&err);
    }

    #[test]
    fn env_supplies_credentials_and_aws_endpoint_url_with_http_allowed() {
        let config = resolve(
            &opts(&[]),
            &env(&[
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.value(AmazonS3ConfigKey::AccessKeyId).as_deref(),
            Some("testing")
        );
        assert_eq!(
            config.value(AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            config.value(AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(
            config
                .client
                .client
                .get(&ClientConfigKey::AllowHttp)
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(config.secrets(), vec![SECRET.to_string()]);
    }

    #[test]
    fn https_endpoint_does_not_allow_plain_http() {
        let config = resolve(
            &opts(&[("endpoint_url", "https://minio.example:9000")]),
            &env(&[
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
            ]),
        )
        .unwrap();
        assert_eq!(config.client.client.get(&ClientConfigKey::AllowHttp), None);
    }

    #[test]
    fn storage_options_override_env() {
        let config = resolve(
            &opts(&[
                ("region", "us-east-2"),
                ("endpoint_url", "http://127.0.0.1:10"),
                ("aws_access_key_id", "from-options"),
                ("aws_secret_access_key", "options-secret"),
                ("aws_session_token", TOKEN),
                ("allow_http", "false"),
            ]),
            &env(&[
                ("AWS_ACCESS_KEY_ID", "from-env"),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ]),
        )
        .unwrap();
        use AmazonS3ConfigKey as K;
        assert_eq!(
            config.value(K::AccessKeyId).as_deref(),
            Some("from-options")
        );
        assert_eq!(
            config.value(K::SecretAccessKey).as_deref(),
            Some("options-secret")
        );
        assert_eq!(config.value(K::Region).as_deref(), Some("us-east-2"));
        assert_eq!(
            config.value(K::Endpoint).as_deref(),
            Some("http://127.0.0.1:10")
        );
        // An explicit allow_http=false is respected.
        assert_eq!(
            config
                .client
                .client
                .get(&ClientConfigKey::AllowHttp)
                .map(String::as_str),
            Some("false")
        );
        assert_eq!(
            config.secrets(),
            vec!["options-secret".to_string(), TOKEN.to_string()]
        );
    }

    #[test]
    fn missing_credentials_fail_fast_instead_of_probing_instance_metadata() {
        let started = std::time::Instant::now();
        let err = resolve(&opts(&[]), &env(&[("AWS_REGION", "us-east-1")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no AWS credentials found"), "{text}");
        assert!(
            text.contains("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
            "{text}"
        );
        assert!(text.contains("skip_signature"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(1));
        // A public bucket: no credentials needed.
        resolve(&opts(&[("skip_signature", "true")]), &env(&[])).unwrap();
        // Half a key pair names the missing half.
        let err = resolve(&opts(&[("aws_access_key_id", "a")]), &env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .contains("aws_secret_access_key (AWS_SECRET_ACCESS_KEY) is missing"),
            "{err}"
        );
        let err = resolve(&opts(&[("aws_secret_access_key", SECRET)]), &env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .contains("aws_access_key_id (AWS_ACCESS_KEY_ID) is missing"),
            "{err}"
        );
        assert_clean(&err);
    }

    #[test]
    fn shared_aws_files_supply_profile_credentials_region_and_endpoint() {
        let dir = temp_dir("awsfiles");
        let creds = dir.join("credentials");
        let config = dir.join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = defaultsecret\n\n\
             [work]\naws_access_key_id=WORKKEY\naws_secret_access_key=worksecret\naws_session_token = worktoken\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-central-1\n[profile work]\nregion=ap-south-1\nendpoint_url = http://127.0.0.1:11\n",
        )
        .unwrap();
        let files = [
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ];
        use AmazonS3ConfigKey as K;
        let c = resolve(&opts(&[]), &env(&files)).unwrap();
        assert_eq!(c.value(K::AccessKeyId).as_deref(), Some("DEFAULTKEY"));
        assert_eq!(c.value(K::Region).as_deref(), Some("eu-central-1"));
        assert_eq!(c.value(K::Endpoint), None);

        let mut with_profile = files.to_vec();
        with_profile.push(("AWS_PROFILE", "work"));
        let c = resolve(&opts(&[]), &env(&with_profile)).unwrap();
        assert_eq!(c.value(K::AccessKeyId).as_deref(), Some("WORKKEY"));
        assert_eq!(c.value(K::Token).as_deref(), Some("worktoken"));
        assert_eq!(c.value(K::Region).as_deref(), Some("ap-south-1"));
        assert_eq!(c.value(K::Endpoint).as_deref(), Some("http://127.0.0.1:11"));
        assert_eq!(
            c.client
                .client
                .get(&ClientConfigKey::AllowHttp)
                .map(String::as_str),
            Some("true")
        );

        // The profile option wins over AWS_PROFILE; env variables win over files.
        let c = resolve(&opts(&[("profile", "default")]), &env(&with_profile)).unwrap();
        assert_eq!(c.value(K::AccessKeyId).as_deref(), Some("DEFAULTKEY"));
        let mut with_env = files.to_vec();
        with_env.extend([
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", "us-west-2"),
        ]);
        let c = resolve(&opts(&[]), &env(&with_env)).unwrap();
        assert_eq!(c.value(K::AccessKeyId).as_deref(), Some("ENVKEY"));
        assert_eq!(c.value(K::Region).as_deref(), Some("us-west-2"));

        let err = resolve(&opts(&[("profile", "nope")]), &env(&files)).unwrap_err();
        assert!(
            err.to_string().contains("profile \"nope\" not found"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_option_values_are_reported_as_options_errors() {
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ]);
        let err = Remote::open_with_env(
            "s3://b/k.csv",
            &opts(&[("skip_signature", "maybe")]),
            Purpose::Read,
            &e,
        )
        .err()
        .unwrap();
        assert!(matches!(err, RemoteError::Options(_)), "{err:?}");
        assert!(err.to_string().contains("maybe"), "{err}");
        assert_clean(&err);
        let err = Remote::open_with_env(
            "s3://b/k.csv",
            &opts(&[("timeout", "soon")]),
            Purpose::Read,
            &e,
        )
        .err()
        .unwrap();
        assert!(matches!(err, RemoteError::Options(_)), "{err:?}");
        assert_clean(&err);
        // Debug output of the resolved config never shows the secret.
        let config = resolve(&opts(&[]), &e).unwrap();
        assert!(!format!("{config:?}").contains(SECRET));
    }

    // --- error mapping ------------------------------------------------------------

    #[derive(Debug)]
    struct Text(String);
    impl std::fmt::Display for Text {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Text {}

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(Text(text.into())),
        }
    }

    #[test]
    fn s3_error_codes_map_to_variants_without_secrets() {
        let url = "s3://b/k.csv";
        let secrets = vec![SECRET.to_string(), TOKEN.to_string()];
        let denied = generic(&format!(
            "Error performing PUT http://127.0.0.1:9/b/k.csv?uploadId=1&X-Amz-Signature=abc in 1ms - \
             Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?>\n<Error>\
             <Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not \
             match the signature you provided. Check your key ({SECRET}) and signing method.</Message></Error>"
        ));
        let err = classify(&denied, url, Kind::S3, &secrets);
        assert!(matches!(err, RemoteError::Denied { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "s3://b/k.csv: access denied: SignatureDoesNotMatch: The request signature"
            ),
            "{text}"
        );
        assert!(
            text.contains("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
            "{text}"
        );
        assert_clean(&err);

        let bucket = generic(
            "Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code>\
             <Message>The specified bucket does not exist</Message></Error>",
        );
        let err = classify(&bucket, url, Kind::S3, &secrets);
        assert_eq!(
            err.to_string(),
            "s3://b/k.csv: not found (check the bucket and key)"
        );

        let not_found = object_store::Error::NotFound {
            path: "k.csv".into(),
            source: Box::new(Text(
                "Server returned non-2xx status code: 404 Not Found: ".into(),
            )),
        };
        assert!(matches!(
            classify(&not_found, url, Kind::S3, &secrets),
            RemoteError::NotFound { .. }
        ));

        let forbidden = object_store::Error::PermissionDenied {
            path: "k.csv".into(),
            source: Box::new(Text(
                "Server returned non-2xx status code: 403 Forbidden: ".into(),
            )),
        };
        let err = classify(&forbidden, url, Kind::S3, &secrets);
        assert!(
            err.to_string()
                .contains("access denied: the server answered HTTP 403"),
            "{err}"
        );

        let token = generic(&format!(
            "status code: 400 Bad Request: <Error><Code>ExpiredToken</Code><Message>The provided token {TOKEN} has expired.</Message></Error>"
        ));
        let err = classify(&token, url, Kind::S3, &secrets);
        assert!(matches!(err, RemoteError::Denied { .. }), "{err:?}");
        assert_clean(&err);

        let other = generic(&format!(
            "Error performing GET https://u:hunter2@h/k?X-Amz-Signature=zz in 5s -\nHTTP error: error sending request {SECRET}"
        ));
        let err = classify(&other, url, Kind::S3, &secrets);
        assert!(matches!(err, RemoteError::Other { .. }));
        assert!(err.to_string().contains("https://h/k"), "{err}");
        assert_clean(&err);
    }

    #[test]
    fn http_405_is_not_reported_as_not_found() {
        let e = object_store::Error::NotFound {
            path: String::new(),
            source: Box::new(Text(
                "Server returned non-2xx status code: 405 Method Not Allowed: ".into(),
            )),
        };
        assert!(!is_plain_not_found(&e));
        assert!(matches!(
            classify(&e, "http://h/a", Kind::Http, &[]),
            RemoteError::Other { .. }
        ));
    }

    #[test]
    fn http_targets_are_read_only() {
        let err = upload(
            Path::new("/nonexistent.csv"),
            "http://127.0.0.1:9/a.csv",
            &opts(&[]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "http://127.0.0.1:9/a.csv: HTTP(S) locations are read-only; write to an s3:// URL or a local path"
        );
    }

    // --- integration: moto + http.server --------------------------------------------

    /// Shared by the S3 tests; the credential test takes it exclusively
    /// because it switches moto's auth enforcement on for the whole server.
    static AUTH_LOCK: RwLock<()> = RwLock::new(());

    struct S3 {
        endpoint: String,
        _guard: std::sync::RwLockReadGuard<'static, ()>,
    }

    fn s3_server() -> Option<S3> {
        let Ok(endpoint) = std::env::var("REMOTE_TEST_S3_ENDPOINT") else {
            eprintln!("skipped: set REMOTE_TEST_S3_ENDPOINT to an S3-compatible server (moto)");
            return None;
        };
        let guard = AUTH_LOCK.read().unwrap_or_else(|e| e.into_inner());
        Some(S3 {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            _guard: guard,
        })
    }

    fn s3_opts(endpoint: &str) -> StorageOptions {
        opts(&[
            ("aws_access_key_id", "testing"),
            ("aws_secret_access_key", SECRET),
            ("aws_region", "us-east-1"),
            ("aws_endpoint_url", endpoint),
        ])
    }

    /// A minimal HTTP/1.1 client for setting up moto (unsigned requests).
    fn raw_http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let rest = url.strip_prefix("http://").expect("http URL");
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let mut stream = TcpStream::connect(host).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn new_bucket(endpoint: &str) -> String {
        let name = format!("rt-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (status, body) = raw_http("PUT", &format!("{endpoint}/{name}"), &[], b"");
        assert_eq!(status, 200, "create bucket: {body}");
        name
    }

    fn put_raw(endpoint: &str, bucket: &str, key: &str, data: &[u8]) {
        let (status, body) = raw_http("PUT", &format!("{endpoint}/{bucket}/{key}"), &[], data);
        assert_eq!(status, 200, "put object: {body}");
    }

    fn pending_multipart_uploads(endpoint: &str, bucket: &str) -> usize {
        let (status, body) = raw_http("GET", &format!("{endpoint}/{bucket}?uploads"), &[], b"");
        assert_eq!(status, 200, "{body}");
        body.matches("<Upload>").count()
    }

    fn object_exists(endpoint: &str, bucket: &str, key: &str) -> bool {
        match head(&format!("s3://{bucket}/{key}"), &s3_opts(endpoint)) {
            Ok(_) => true,
            Err(RemoteError::NotFound { .. }) => false,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn s3_download_keeps_extension_and_content() {
        let Some(s3) = s3_server() else { return };
        let bucket = new_bucket(&s3.endpoint);
        let body = data(300_000, 1);
        put_raw(&s3.endpoint, &bucket, "dir/crm.csv.gz", &body);
        let dir = temp_dir("dl");
        let url = format!("s3://{bucket}/dir/crm.csv.gz");
        let path = download(&url, &s3_opts(&s3.endpoint), &dir, &|| false).unwrap();
        assert_eq!(path.parent().unwrap(), dir);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.ends_with("-crm.csv.gz") && name.len() == 36 + 1 + 10,
            "{name}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), body);

        let meta = head(&url, &s3_opts(&s3.endpoint)).unwrap();
        assert_eq!(meta["url"], url.as_str());
        assert_eq!(meta["size"], 300_000);
        assert!(meta["etag"].as_str().is_some_and(|e| e.len() > 8), "{meta}");
        assert!(
            meta["last_modified"]
                .as_str()
                .is_some_and(|t| t.contains('T')),
            "{meta}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn s3_upload_is_multipart_and_round_trips() {
        let Some(s3) = s3_server() else { return };
        let bucket = new_bucket(&s3.endpoint);
        let dir = temp_dir("up");
        let local = dir.join("big.parquet");
        let body = data(2 * PART_SIZE + 123_457, 2); // 3 parts
        std::fs::write(&local, &body).unwrap();
        let url = format!("s3://{bucket}/out/big.parquet");
        upload(&local, &url, &s3_opts(&s3.endpoint)).unwrap();
        let meta = head(&url, &s3_opts(&s3.endpoint)).unwrap();
        assert_eq!(meta["size"], body.len() as u64);
        // S3 (and moto) give a multipart object the ETag "<md5>-<parts>".
        let etag = meta["etag"].as_str().unwrap().trim_matches('"').to_string();
        assert!(etag.ends_with("-3"), "{etag}");
        let back = download(&url, &s3_opts(&s3.endpoint), &dir, &|| false).unwrap();
        assert!(std::fs::read(&back).unwrap() == body, "content differs");
        assert_eq!(pending_multipart_uploads(&s3.endpoint, &bucket), 0);

        // Replacing an existing object works; a tiny file is one part.
        std::fs::write(&local, b"a,b\n1,2\n").unwrap();
        upload(&local, &url, &s3_opts(&s3.endpoint)).unwrap();
        let back = download(&url, &s3_opts(&s3.endpoint), &dir, &|| false).unwrap();
        assert_eq!(std::fs::read(back).unwrap(), b"a,b\n1,2\n");
        // An empty file uploads as an empty object.
        std::fs::write(&local, b"").unwrap();
        upload(&local, &url, &s3_opts(&s3.endpoint)).unwrap();
        assert_eq!(head(&url, &s3_opts(&s3.endpoint)).unwrap()["size"], 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn s3_missing_key_and_bucket_are_not_found_and_leave_no_file() {
        let Some(s3) = s3_server() else { return };
        let bucket = new_bucket(&s3.endpoint);
        let dir = temp_dir("missing");
        let o = s3_opts(&s3.endpoint);
        for url in [
            format!("s3://{bucket}/nope.csv"),
            "s3://no-such-bucket-for-remote-tests/crm.csv".to_string(),
        ] {
            let err = download(&url, &o, &dir, &|| false).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{url}: not found (check the bucket and key)")
            );
            assert_clean(&err);
            let err = head(&url, &o).unwrap_err();
            assert!(matches!(err, RemoteError::NotFound { .. }), "{err:?}");
        }
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn s3_upload_to_missing_bucket_fails_and_creates_nothing() {
        let Some(s3) = s3_server() else { return };
        let dir = temp_dir("nobucket");
        let local = dir.join("a.csv");
        std::fs::write(&local, b"a\n1\n").unwrap();
        let url = "s3://no-such-bucket-for-remote-tests/out.csv";
        let err = upload(&local, url, &s3_opts(&s3.endpoint)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{url}: not found (check the bucket and key)")
        );
        let err = upload(&dir.join("missing.csv"), url, &s3_opts(&s3.endpoint)).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A reader that fails after `ok` bytes, like a disk error mid-upload.
    struct FailingReader {
        data: Vec<u8>,
        pos: usize,
        ok: usize,
    }

    impl Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.pos == self.data.len() {
                return Ok(0);
            }
            if self.pos >= self.ok {
                return Err(std::io::Error::other("simulated disk failure"));
            }
            let n = buf.len().min(self.ok - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn s3_failed_upload_is_aborted_and_leaves_no_object() {
        let Some(s3) = s3_server() else { return };
        let bucket = new_bucket(&s3.endpoint);
        let url = format!("s3://{bucket}/partial.csv");
        let remote = Remote::open(&url, &s3_opts(&s3.endpoint), Purpose::Write).unwrap();
        let total = 3 * PART_SIZE;
        let reader = FailingReader {
            data: data(total, 3),
            pos: 0,
            ok: 2 * PART_SIZE + 1000, // two parts sent, then the failure
        };
        let rt = runtime(&remote).unwrap();
        let err = rt
            .block_on(upload_reader(&remote, reader, PART_SIZE))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("upload aborted: simulated disk failure"),
            "{err}"
        );
        assert!(!object_exists(&s3.endpoint, &bucket, "partial.csv"));
        assert_eq!(pending_multipart_uploads(&s3.endpoint, &bucket), 0);

        // Same reader without the failure: the object appears (the test
        // above is not passing because nothing ever gets uploaded).
        let reader = FailingReader {
            data: data(total, 3),
            pos: 0,
            ok: total,
        };
        rt.block_on(upload_reader(&remote, reader, PART_SIZE))
            .unwrap();
        assert!(object_exists(&s3.endpoint, &bucket, "partial.csv"));
    }

    #[test]
    fn s3_download_can_be_cancelled_and_leaves_no_file() {
        let Some(s3) = s3_server() else { return };
        let bucket = new_bucket(&s3.endpoint);
        put_raw(&s3.endpoint, &bucket, "big.csv", &data(4 << 20, 4));
        let dir = temp_dir("cancel");
        let url = format!("s3://{bucket}/big.csv");
        let err = download(&url, &s3_opts(&s3.endpoint), &dir, &|| true).unwrap_err();
        assert_eq!(err.to_string(), format!("{url}: cancelled"));
        // Cancelled after a few chunks: the partial file is removed.
        let calls = Cell::new(0);
        let cancel_later = || {
            calls.set(calls.get() + 1);
            calls.get() > 4
        };
        let err = download(&url, &s3_opts(&s3.endpoint), &dir, &cancel_later).unwrap_err();
        assert_eq!(err.to_string(), format!("{url}: cancelled"));
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn s3_unreachable_endpoint_is_a_clear_error() {
        let Some(_s3) = s3_server() else { return };
        let port = free_port();
        let o = s3_opts(&format!("http://127.0.0.1:{port}"));
        let started = std::time::Instant::now();
        let err = head("s3://b/k.csv", &o).unwrap_err();
        assert!(matches!(err, RemoteError::Other { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("s3://b/k.csv: "), "{text}");
        assert!(text.to_lowercase().contains("connect"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert_clean(&err);
    }

    /// Switches moto's IAM enforcement on; back off when dropped.
    struct EnforceAuth<'a>(&'a str);

    impl<'a> EnforceAuth<'a> {
        fn on(endpoint: &'a str) -> Self {
            let (status, body) = raw_http(
                "POST",
                &format!("{endpoint}/moto-api/reset-auth"),
                &[],
                b"0",
            );
            assert_eq!(status, 200, "{body}");
            EnforceAuth(endpoint)
        }
    }

    impl Drop for EnforceAuth<'_> {
        fn drop(&mut self) {
            raw_http(
                "POST",
                &format!("{}/moto-api/reset-auth", self.0),
                &[],
                b"inf",
            );
        }
    }

    /// An IAM user with an s3:* policy, created while auth is not enforced
    /// (moto does not check signatures then, so a fake one routes to IAM).
    fn iam_user(endpoint: &str) -> (String, String) {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIAFAKE/20240101/us-east-1/iam/aws4_request, \
                    SignedHeaders=host, Signature=00";
        let headers = [
            ("Authorization", auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        let user = format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let call = |body: String| {
            let (status, text) =
                raw_http("POST", &format!("{endpoint}/"), &headers, body.as_bytes());
            assert_eq!(status, 200, "{text}");
            text
        };
        call(format!(
            "Action=CreateUser&UserName={user}&Version=2010-05-08"
        ));
        let key = call(format!(
            "Action=CreateAccessKey&UserName={user}&Version=2010-05-08"
        ));
        let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3A%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
        call(format!(
            "Action=PutUserPolicy&UserName={user}&PolicyName=all&PolicyDocument={policy}&Version=2010-05-08"
        ));
        let id = between(&key, "<AccessKeyId>", "</AccessKeyId>")
            .unwrap()
            .to_string();
        let secret = between(&key, "<SecretAccessKey>", "</SecretAccessKey>")
            .unwrap()
            .to_string();
        (id, secret)
    }

    #[test]
    fn s3_wrong_credentials_are_denied_without_leaking_the_secret() {
        let Ok(endpoint) = std::env::var("REMOTE_TEST_S3_ENDPOINT") else {
            eprintln!("skipped: set REMOTE_TEST_S3_ENDPOINT");
            return;
        };
        let _exclusive = AUTH_LOCK.write().unwrap_or_else(|e| e.into_inner());
        let endpoint = endpoint.trim_end_matches('/');
        let bucket = new_bucket(endpoint);
        put_raw(endpoint, &bucket, "crm.csv", b"a\n1\n");
        let (key_id, real_secret) = iam_user(endpoint);
        let dir = temp_dir("auth");
        let local = dir.join("up.csv");
        std::fs::write(&local, b"x\n1\n").unwrap();
        let url = format!("s3://{bucket}/crm.csv");
        let with = |id: &str, secret: &str| {
            opts(&[
                ("aws_access_key_id", id),
                ("aws_secret_access_key", secret),
                ("aws_region", "us-east-1"),
                ("aws_endpoint_url", endpoint),
            ])
        };
        {
            let _auth = EnforceAuth::on(endpoint);
            // Unknown key id.
            let err =
                download(&url, &with("AKIAUNKNOWN00000000", SECRET), &dir, &|| false).unwrap_err();
            eprintln!("{err}");
            assert!(matches!(err, RemoteError::Denied { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains("access denied: InvalidAccessKeyId"),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
                "{err}"
            );
            assert_clean(&err);
            // Known key id, wrong secret.
            let err = download(&url, &with(&key_id, SECRET), &dir, &|| false).unwrap_err();
            eprintln!("{err}");
            assert!(
                err.to_string()
                    .contains("access denied: SignatureDoesNotMatch"),
                "{err}"
            );
            assert_clean(&err);
            let err = head(&url, &with(&key_id, SECRET)).unwrap_err();
            eprintln!("{err}");
            assert!(matches!(err, RemoteError::Denied { .. }), "{err:?}");
            assert_clean(&err);
            let err = upload(
                &local,
                &format!("s3://{bucket}/up.csv"),
                &with(&key_id, SECRET),
            )
            .unwrap_err();
            eprintln!("{err}");
            assert!(matches!(err, RemoteError::Denied { .. }), "{err:?}");
            assert_clean(&err);
            assert!(
                entries(&dir) == vec!["up.csv".to_string()],
                "{:?}",
                entries(&dir)
            );
            // The right secret works while auth is enforced.
            let path = download(&url, &with(&key_id, &real_secret), &dir, &|| false).unwrap();
            assert_eq!(std::fs::read(path).unwrap(), b"a\n1\n");
        }
        assert!(!object_exists(endpoint, &bucket, "up.csv"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    // --- HTTP -------------------------------------------------------------------------

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    struct HttpServer {
        child: Child,
        base: String,
    }

    impl Drop for HttpServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn http_server(dir: &Path) -> Option<HttpServer> {
        std::env::var("REMOTE_TEST_S3_ENDPOINT").ok().or_else(|| {
            eprintln!("skipped: set REMOTE_TEST_S3_ENDPOINT to run the integration tests");
            None
        })?;
        let python = std::env::var("REMOTE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = free_port();
        let mut child = Command::new(python)
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 -m http.server");
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
        let server = HttpServer {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("http.server did not start on port {port}");
    }

    #[test]
    fn http_download_head_and_not_found() {
        let served = temp_dir("served");
        let Some(server) = http_server(&served) else {
            return;
        };
        let body = data(1_500_000, 5);
        std::fs::create_dir_all(served.join("sub dir")).unwrap();
        std::fs::write(served.join("sub dir").join("crm.csv.gz"), &body).unwrap();
        let dir = temp_dir("httpdl");
        let url = format!("{}/sub%20dir/crm.csv.gz?token=hunter2&v=1", server.base);
        let path = download(&url, &opts(&[]), &dir, &|| false).unwrap();
        assert!(path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-crm.csv.gz"));
        assert!(std::fs::read(&path).unwrap() == body, "content differs");

        let meta = head(&url, &opts(&[])).unwrap();
        assert_eq!(meta["size"], 1_500_000);
        assert_eq!(
            meta["url"],
            format!("{}/sub%20dir/crm.csv.gz?v=1", server.base)
        );
        assert!(meta["last_modified"].as_str().is_some(), "{meta}");
        assert_eq!(meta["etag"], serde_json::Value::Null); // http.server sends none

        let missing = format!("{}/missing.csv?sig=hunter2", server.base);
        let err = download(&missing, &opts(&[]), &dir, &|| false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}/missing.csv: not found (check the bucket and key)",
                server.base
            )
        );
        assert_clean(&err);
        assert!(matches!(
            head(&missing, &opts(&[])),
            Err(RemoteError::NotFound { .. })
        ));
        assert_eq!(entries(&dir).len(), 1);
        // S3-only options are accepted (one storage_options dict may serve
        // several sources) but unknown ones are still rejected.
        download(&url, &s3_opts("http://127.0.0.1:9"), &dir, &|| false).unwrap();
        let err = download(&url, &opts(&[("nonsense", "1")]), &dir, &|| false).unwrap_err();
        assert!(matches!(err, RemoteError::Options(_)), "{err:?}");
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(served).unwrap();
    }
}
