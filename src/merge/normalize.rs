//! Key normalisers for the CRM merge: the functions that turn an identifier
//! (a name, an email, a phone number) into the value two rows are matched on.
//!
//! They run once per row on millions of rows (as DuckDB scalar functions), so
//! each allocates only its output and rejects obvious non-values early. `None`
//! is the SQL NULL: a key that normalises to `None` never matches anything.
//!
//! ```
//! use _duckmerge::merge::normalize::{normalize_phone, Normalizer};
//!
//! assert_eq!(normalize_phone("00420 601 111 222", None).as_deref(), Some("+420601111222"));
//! let email = Normalizer::from_config("email", None, true).unwrap();
//! assert_eq!(email.apply("John.Doe+news@GoogleMail.com").as_deref(), Some("johndoe@gmail.com"));
//! ```

use std::fmt::Write as _;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// A phone region: an ISO 3166-1 alpha-2 country code as libphonenumber
/// knows it (`Region::CZ`). Build one from config text with [`parse_region`].
pub type Region = phonenumber::country::Id;

/// Fewest digits a valid phone number has: the shortest national number in
/// libphonenumber's metadata (Niue, Tokelau) is 4 digits.
const MIN_PHONE_DIGITS: usize = 4;

/// libphonenumber refuses longer inputs (its MAX_INPUT_STRING_LENGTH).
const MAX_PHONE_INPUT_LEN: usize = 250;

/// Room for a compacted number: `+`, 3 country-code digits, 17 national
/// digits and slack for an international prefix; longer takes the slow path.
const COMPACT_PHONE_CAPACITY: usize = 32;

/// Normalises free text for matching: trimmed, lowercased, inner whitespace
/// runs collapsed to one space, accents stripped (Unicode NFKD, then combining
/// marks dropped). Empty results are `None`.
///
/// Why: vendors spell the same name with different case, spacing and
/// diacritics (`Žluťoučký  Kůň` vs `zlutoucky kun`).
///
/// ```
/// use _duckmerge::merge::normalize::normalize_text;
/// assert_eq!(normalize_text(" Žluťoučký  Kůň ").as_deref(), Some("zlutoucky kun"));
/// assert_eq!(normalize_text("   "), None);
/// ```
pub fn normalize_text(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    if s.is_ascii() {
        // ASCII has nothing to decompose; skip NFKD, the bulk of real data.
        push_collapsed(
            &mut out,
            s.bytes().map(|b| char::from(b.to_ascii_lowercase())),
        );
    } else {
        let folded = s
            .nfkd()
            .filter(|&c| !is_combining_mark(c))
            .flat_map(char::to_lowercase);
        push_collapsed(&mut out, folded);
    }
    (!out.is_empty()).then_some(out)
}

/// Appends `chars` to `out` with whitespace runs collapsed to one space and
/// none at either end (NFKD can turn a trimmed char into a space).
fn push_collapsed(out: &mut String, chars: impl Iterator<Item = char>) {
    let mut pending_space = false;
    for c in chars {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
}

/// Normalises an email address: trimmed and lowercased; `None` unless it has
/// exactly one `@` with a non-empty local part and domain.
///
/// With `canonical`, also folds addresses that reach the same mailbox: a
/// `+tag` suffix of the local part is dropped, and for `gmail.com` /
/// `googlemail.com` the dots of the local part go and the domain becomes
/// `gmail.com`. A canonical local part that ends up empty (`+tag@x.com`) is
/// `None`.
///
/// Why: CRM and vendor exports differ in case, padding and sub-addressing.
///
/// ```
/// use _duckmerge::merge::normalize::normalize_email;
/// assert_eq!(normalize_email(" A+b@Example.com", false).as_deref(), Some("a+b@example.com"));
/// assert_eq!(normalize_email(" A+b@Example.com", true).as_deref(), Some("a@example.com"));
/// assert_eq!(normalize_email("not-an-email", false), None);
/// ```
pub fn normalize_email(s: &str, canonical: bool) -> Option<String> {
    let s = s.trim();
    let (local, domain) = s.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    if !canonical {
        push_lowercase(&mut out, s);
        return Some(out);
    }
    let mailbox = local
        .split_once('+')
        .map_or(local, |(mailbox, _tag)| mailbox);
    let gmail =
        domain.eq_ignore_ascii_case("gmail.com") || domain.eq_ignore_ascii_case("googlemail.com");
    if gmail {
        // Gmail ignores dots in the local part; googlemail.com is the same service.
        mailbox
            .split('.')
            .for_each(|part| push_lowercase(&mut out, part));
    } else {
        push_lowercase(&mut out, mailbox);
    }
    if out.is_empty() {
        return None;
    }
    out.push('@');
    if gmail {
        out.push_str("gmail.com");
    } else {
        push_lowercase(&mut out, domain);
    }
    Some(out)
}

/// Appends `s` lowercased, without the temporary `str::to_lowercase` makes.
fn push_lowercase(out: &mut String, s: &str) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| char::from(b.to_ascii_lowercase())));
    } else {
        s.chars().for_each(|c| out.extend(c.to_lowercase()));
    }
}

/// Parses a config's `default_region` (`"CZ"`, any case, surrounding spaces
/// ignored) into a [`Region`].
///
/// Why: a typo in a region must fail the config up front, not turn every
/// national number into NULL.
///
/// ```
/// use _duckmerge::merge::normalize::{parse_region, Region};
/// assert_eq!(parse_region("cz"), Ok(Region::CZ));
/// assert!(parse_region("XX").is_err());
/// ```
pub fn parse_region(s: &str) -> Result<Region, String> {
    let code = s.trim();
    let mut upper = [0u8; 2];
    if code.len() == 2 && code.is_ascii() {
        upper.copy_from_slice(code.as_bytes());
        upper.make_ascii_uppercase();
        // Two ASCII bytes are always UTF-8.
        if let Ok(region) = std::str::from_utf8(&upper).unwrap_or_default().parse() {
            return Ok(region);
        }
    }
    Err(format!(
        "unknown default_region {s:?}: expected a two-letter ISO 3166-1 country code such as \"CZ\""
    ))
}

/// Normalises a phone number to E.164 (`+420601111222`) through libphonenumber
/// (the `phonenumber` crate). National numbers need `default_region`; a
/// leading `00` is read as the international prefix. Unparseable or invalid
/// numbers are `None`; an extension is dropped. Never panics.
///
/// `default_region` is parsed on every call and an unknown one acts as no
/// region: validate configs with [`parse_region`] and call
/// [`normalize_phone_in`] on hot paths.
///
/// Why: the same number arrives as `+420 601 111 222`, `00420601111222` or
/// `601-111-222` and must match.
///
/// ```
/// use _duckmerge::merge::normalize::normalize_phone;
/// assert_eq!(normalize_phone("601-111-222", Some("CZ")).as_deref(), Some("+420601111222"));
/// assert_eq!(normalize_phone("601-111-222", None), None);
/// assert_eq!(normalize_phone("abc", Some("CZ")), None);
/// ```
pub fn normalize_phone(s: &str, default_region: Option<&str>) -> Option<String> {
    normalize_phone_in(s, default_region.and_then(|r| parse_region(r).ok()))
}

/// [`normalize_phone`] with an already parsed region: the per-row entry point.
///
/// Strings with fewer than 4 digits or an `@` are rejected without the
/// library (~10 ns). Simple inputs (digits, one leading `+`, spaces and
/// `-./()`) are compacted on the stack, so the `00` → `+` rewrite costs no
/// allocation; others (extensions, `tel:` URIs, vanity letters) go to the
/// library as they are.
///
/// Cost: a number the fast path decides (`fast_e164`) takes under
/// 1 µs (the 720k phones of one benchmark vendor file: 0.47-0.69 s on one
/// thread, through the SQL function). Others take ~4 µs, nearly all in
/// libphonenumber, whose regex cache sits behind one global mutex — calls
/// from several threads run one at a time, so normalise distinct values
/// where it matters.
pub fn normalize_phone_in(s: &str, default_region: Option<Region>) -> Option<String> {
    let s = s.trim();
    if s.len() > MAX_PHONE_INPUT_LEN {
        return None;
    }
    let mut buf = [0u8; COMPACT_PHONE_CAPACITY];
    match scan_phone(s, &mut buf) {
        PhoneShape::NotAPhone => None,
        PhoneShape::Compact(range) => {
            // Only ASCII digits and '+' were written.
            let compact = std::str::from_utf8(&buf[range]).ok()?;
            cached_e164(compact, default_region)
        }
        PhoneShape::Other => match s.strip_prefix("00") {
            Some(rest) => parse_to_e164(&format!("+{rest}"), default_region),
            None => parse_to_e164(s, default_region),
        },
    }
}

/// Entries a thread keeps in its cache of compact numbers → E.164 (about
/// 100 bytes each with the map's overhead); the cache is emptied when full.
/// Small on purpose: it catches a number repeated in nearby rows (one
/// contact's spellings, a vendor's duplicates); a cache holding a whole
/// column (2^18 entries) cost ~100 MB of RSS on the 1M-row benchmark and
/// gained no measurable time, since the fast path below is ~1.7 µs.
const PHONE_CACHE_ENTRIES: usize = 1 << 12;

/// `(region, compact number)` → its E.164 form (None: not a valid number).
type PhoneCache = std::collections::HashMap<(Option<Region>, Box<str>), Option<Box<str>>>;

thread_local! {
    /// `(region, compact number)` → result. The same number arrives in many
    /// spellings (`+420 601…`, `00420601…`, `601-…`) that compact to the same
    /// string, and in every source; each thread parses it once, without the
    /// library's global lock.
    static PHONE_CACHE: std::cell::RefCell<PhoneCache> = std::cell::RefCell::new(PhoneCache::new());
}

/// A compact number's E.164 form: the fast path when it decides, else the
/// library through the thread's cache. Numbers the fast path decides skip
/// the cache: a lookup (hash, key allocation, eviction) cost more than the
/// fast path itself (0.57-0.81 s against 0.65-1.06 s for the 720k phones of
/// one 800k-row benchmark vendor file, one thread, runs alternated).
fn cached_e164(compact: &str, default_region: Option<Region>) -> Option<String> {
    // A `+` number does not depend on the region: share its entry.
    let region = if compact.starts_with('+') {
        None
    } else {
        default_region
    };
    match fast_e164(compact, region) {
        Fast::Valid(e164) => return Some(e164),
        Fast::Invalid => return None,
        Fast::AskLibrary => {}
    }
    let key = (region, Box::<str>::from(compact));
    if let Some(hit) = PHONE_CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return hit.map(String::from);
    }
    let out = parse_to_e164(compact, region);
    PHONE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= PHONE_CACHE_ENTRIES {
            c.clear();
        }
        c.insert(key, out.as_deref().map(Box::from));
    });
    out
}

/// One number-type descriptor of a region, compiled once: the possible
/// lengths and the national-number pattern, anchored at the start exactly as
/// the library's `Descriptor::is_match` applies it.
struct FastDescriptor {
    lengths: Vec<u16>,
    pattern: regex::Regex,
}

impl FastDescriptor {
    fn new(d: &phonenumber::metadata::Descriptor) -> Option<Self> {
        let pattern = regex::RegexBuilder::new(&format!("^(?:{})", d.national_number().as_str()))
            // As the library builds its metadata regexes.
            .ignore_whitespace(true)
            .build()
            .ok()?;
        Some(FastDescriptor {
            lengths: d.possible_length().to_vec(),
            pattern,
        })
    }

    fn is_match(&self, national: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(national.len() as u16)))
            && self.pattern.is_match(national)
    }
}

/// What validating a number of one country calling code needs, for codes
/// served by a single region without a national prefix (CZ: +420, …).
struct FastRegion {
    general: FastDescriptor,
    types: Vec<FastDescriptor>,
}

impl FastRegion {
    /// None when the library's own path is needed: several regions share the
    /// code (+1, +44, …) or the region strips a national prefix when parsing.
    fn for_code(code: u16) -> Option<FastRegion> {
        let db = &*phonenumber::metadata::DATABASE;
        let metas = db.by_code(&code)?;
        let [meta] = metas.as_slice() else {
            return None;
        };
        if meta.national_prefix().is_some() || meta.national_prefix_for_parsing().is_some() {
            return None;
        }
        let d = meta.descriptors();
        // `is_valid` asks whether *any* type matches, so the order is free:
        // the common types first, so most numbers stop after one or two.
        let types = [
            d.mobile(),
            d.fixed_line(),
            d.voip(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ]
        .into_iter()
        .flatten()
        .map(FastDescriptor::new)
        .collect::<Option<Vec<_>>>()?;
        Some(FastRegion {
            general: FastDescriptor::new(d.general())?,
            types,
        })
    }

    /// The library's `is_valid`: the general pattern and some number type.
    fn is_valid(&self, national: &str) -> bool {
        self.general.is_match(national) && self.types.iter().any(|t| t.is_match(national))
    }
}

/// Compiled regions by calling code (None: use the library).
static FAST_REGIONS: std::sync::LazyLock<
    std::sync::RwLock<std::collections::HashMap<u16, Option<std::sync::Arc<FastRegion>>>>,
> = std::sync::LazyLock::new(Default::default);

thread_local! {
    /// This thread's view of [`FAST_REGIONS`]: no lock and no shared
    /// reference count touched per number (two threads bumping one `Arc`'s
    /// count per call fight over its cache line).
    static LOCAL_FAST_REGIONS: std::cell::RefCell<
        std::collections::HashMap<u16, Option<std::sync::Arc<FastRegion>>>,
    > = std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Calls `f` with the compiled region of `code` (None: use the library).
fn with_fast_region<T>(code: u16, f: impl FnOnce(Option<&FastRegion>) -> T) -> T {
    LOCAL_FAST_REGIONS.with(|cell| {
        if !cell.borrow().contains_key(&code) {
            let shared = fast_region(code);
            cell.borrow_mut().insert(code, shared);
        }
        let regions = cell.borrow();
        f(regions.get(&code).and_then(|r| r.as_deref()))
    })
}

fn fast_region(code: u16) -> Option<std::sync::Arc<FastRegion>> {
    if let Some(found) = FAST_REGIONS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&code)
    {
        return found.clone();
    }
    let built = FastRegion::for_code(code).map(std::sync::Arc::new);
    FAST_REGIONS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(code, built.clone());
    built
}

/// What the fast path knows about a compact number.
#[derive(Debug, PartialEq, Eq)]
enum Fast {
    /// Valid; its E.164 form.
    Valid(String),
    /// Invalid, as the library would find (a `+` number of a fast region:
    /// the library parses it to the same national number and checks the
    /// same patterns).
    Invalid,
    /// Not decided here: the library's full parser is needed.
    AskLibrary,
}

/// A fast path for compact numbers (`+420601111222`, or national digits with
/// a default region) of single-region calling codes without a national
/// prefix: the library's own metadata patterns, compiled once and shared by
/// all threads (the library re-runs them through a small LRU cache behind
/// one global lock, ~8 µs a number). Everything else goes to the library,
/// which also handles what this skips (a country code written without `+`,
/// national prefixes, shared codes). Agreement with the library is tested
/// on generated numbers.
fn fast_e164(compact: &str, default_region: Option<Region>) -> Fast {
    let international = compact.strip_prefix('+');
    let found = match international {
        Some(digits) => (1..=3).filter(|&n| n < digits.len()).find_map(|n| {
            let code: u16 = digits[..n].parse().ok()?;
            is_calling_code(code).then(|| (code, &digits[n..]))
        }),
        None => default_region
            .and_then(|r| phonenumber::metadata::DATABASE.by_id(r.as_ref()))
            .map(|meta| (meta.country_code(), compact)),
    };
    let Some((code, national)) = found else {
        return Fast::AskLibrary;
    };
    with_fast_region(code, |region| match region {
        None => Fast::AskLibrary,
        Some(region) if region.is_valid(national) => {
            // As `format!("+{code}{national}")`, without the formatting machinery.
            let mut e164 = String::with_capacity(1 + 3 + national.len());
            e164.push('+');
            e164.push_str(itoa_u16(code, &mut [0u8; 5]));
            e164.push_str(national);
            Fast::Valid(e164)
        }
        Some(_) if international.is_some() => Fast::Invalid,
        // National digits may still hold a country code without `+`.
        Some(_) => Fast::AskLibrary,
    })
}

/// Whether the library knows a region for this country calling code, from a
/// table built once (the library's lookup hashes the code every time).
fn is_calling_code(code: u16) -> bool {
    static CODES: std::sync::LazyLock<Vec<bool>> = std::sync::LazyLock::new(|| {
        (0..1000u16)
            .map(|c| phonenumber::metadata::DATABASE.region(&c).is_some())
            .collect()
    });
    CODES.get(code as usize).copied().unwrap_or(false)
}

/// `n` in decimal, written into `buf`.
fn itoa_u16(mut n: u16, buf: &mut [u8; 5]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

/// What a cheap scan of a phone input found.
enum PhoneShape {
    /// Too few digits, or an `@`: no number to find, skip the parser.
    NotAPhone,
    /// A simple number, compacted to `+digits` / `digits` in this range of
    /// the buffer, a leading `00` already turned into `+`.
    Compact(std::ops::Range<usize>),
    /// Anything else: for libphonenumber to make sense of.
    Other,
}

/// Scans `s` once, counting digits and compacting a simple number into `buf`.
fn scan_phone(s: &str, buf: &mut [u8; COMPACT_PHONE_CAPACITY]) -> PhoneShape {
    let mut len = 0;
    let mut digits = 0;
    let mut simple = true;
    for c in s.chars() {
        match c {
            '0'..='9' => {
                digits += 1;
                if simple && len < buf.len() {
                    buf[len] = c as u8;
                    len += 1;
                } else {
                    simple = false;
                }
            }
            '+' if len == 0 => {
                buf[0] = b'+';
                len = 1;
            }
            ' ' | '\t' | '\u{a0}' | '-' | '.' | '/' | '(' | ')' => {}
            '@' => return PhoneShape::NotAPhone,
            _ => simple = false,
        }
    }
    if digits < MIN_PHONE_DIGITS {
        PhoneShape::NotAPhone
    } else if !simple {
        PhoneShape::Other
    } else if buf.starts_with(b"00") {
        buf[1] = b'+';
        PhoneShape::Compact(1..len)
    } else {
        PhoneShape::Compact(0..len)
    }
}

/// Parses and validates with libphonenumber and writes E.164.
fn parse_to_e164(s: &str, default_region: Option<Region>) -> Option<String> {
    // With a country code the default region must not apply: libphonenumber
    // would strip its national prefix rules from the number ("+49 030 …").
    let region = if s.starts_with('+') {
        None
    } else {
        default_region
    };
    // A panic in the library must not cross DuckDB's C callback and abort
    // the host: treat it as an unparseable number.
    let number = std::panic::catch_unwind(|| {
        let number = phonenumber::parse(region, s).ok()?;
        phonenumber::is_valid(&number).then_some(number)
    })
    .ok()??;
    // E.164 by hand: the library's formatter also runs its national-format
    // regexes, which E.164 never uses.
    let mut out = String::with_capacity(20);
    write!(out, "+{}{}", number.code().value(), number.national()).ok()?;
    Some(out)
}

/// How a merge key is normalised before matching (the key's `normalize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalizer {
    /// [`normalize_text`]: the default.
    #[default]
    Text,
    /// [`normalize_email`].
    Email { canonical: bool },
    /// [`normalize_phone_in`] to E.164.
    Phone { default_region: Option<Region> },
    /// The value as it is; only the empty string is NULL.
    Exact,
}

impl Normalizer {
    /// The names a config may give, in the order error messages list them.
    pub const NAMES: [&'static str; 4] = ["text", "email", "phone", "exact"];

    /// Builds the normaliser a key config names. `default_region` is
    /// validated whenever given and used by `"phone"`; `email_canonical` is
    /// used by `"email"`.
    ///
    /// Why: bad names and regions must fail before any row is read.
    ///
    /// ```
    /// use _duckmerge::merge::normalize::{Normalizer, Region};
    /// assert_eq!(
    ///     Normalizer::from_config("phone", Some("CZ"), false),
    ///     Ok(Normalizer::Phone { default_region: Some(Region::CZ) }),
    /// );
    /// assert!(Normalizer::from_config("fuzzy", None, false).is_err());
    /// ```
    pub fn from_config(
        name: &str,
        default_region: Option<&str>,
        email_canonical: bool,
    ) -> Result<Normalizer, String> {
        let default_region = default_region.map(parse_region).transpose()?;
        match name {
            "text" => Ok(Normalizer::Text),
            "email" => Ok(Normalizer::Email {
                canonical: email_canonical,
            }),
            "phone" => Ok(Normalizer::Phone { default_region }),
            "exact" => Ok(Normalizer::Exact),
            _ => Err(format!(
                "unknown normalize {name:?}: expected one of {}",
                Self::NAMES.map(|n| format!("{n:?}")).join(", ")
            )),
        }
    }

    /// The config name of this normaliser.
    pub fn name(&self) -> &'static str {
        match self {
            Normalizer::Text => "text",
            Normalizer::Email { .. } => "email",
            Normalizer::Phone { .. } => "phone",
            Normalizer::Exact => "exact",
        }
    }

    /// Normalises one key value; `None` is NULL and never matches.
    pub fn apply(&self, s: &str) -> Option<String> {
        match *self {
            Normalizer::Text => normalize_text(s),
            Normalizer::Email { canonical } => normalize_email(s, canonical),
            Normalizer::Phone { default_region } => normalize_phone_in(s, default_region),
            Normalizer::Exact => (!s.is_empty()).then(|| s.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;
    use std::time::Instant;

    const CZ: Option<&str> = Some("CZ");

    #[test]
    fn calling_codes_and_their_digits() {
        for n in [0u16, 7, 42, 420, 1000, 65535] {
            assert_eq!(itoa_u16(n, &mut [0u8; 5]), n.to_string());
        }
        assert!(is_calling_code(420) && is_calling_code(1) && is_calling_code(44));
        assert!(!is_calling_code(0) && !is_calling_code(999) && !is_calling_code(4200));
    }

    #[test]
    fn the_fast_phone_path_agrees_with_the_library() {
        // Random digit strings of plausible lengths for calling codes the fast
        // path serves (and some it hands back), with and without `+`.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut fast, mut agreed) = (0, 0);
        for _ in 0..20_000 {
            let code = [420u64, 421, 49, 1, 44, 39, 358, 372][next(8) as usize];
            let len = 6 + next(7);
            let national: String = (0..len)
                .map(|i| {
                    let d = if i == 0 { 1 + next(9) } else { next(10) };
                    char::from(b'0' + d as u8)
                })
                .collect();
            for (input, region) in [
                (format!("+{code}{national}"), None),
                (national.clone(), Some(Region::CZ)),
            ] {
                let library = parse_to_e164(&input, region);
                match fast_e164(&input, region) {
                    Fast::Valid(ours) => {
                        fast += 1;
                        assert_eq!(Some(ours), library, "input {input:?} region {region:?}");
                        agreed += 1;
                    }
                    Fast::Invalid => {
                        fast += 1;
                        assert_eq!(library, None, "input {input:?} region {region:?}");
                        agreed += 1;
                    }
                    Fast::AskLibrary => {}
                }
            }
        }
        // The fast path did serve a good share of them.
        assert!(fast > 1_000, "fast path served only {fast}");
        assert_eq!(fast, agreed);
        // Known answers.
        let valid = |s: &str| Fast::Valid(s.to_string());
        assert_eq!(fast_e164("+420601111222", None), valid("+420601111222"));
        assert_eq!(
            fast_e164("601111222", Some(Region::CZ)),
            valid("+420601111222")
        );
        assert_eq!(fast_e164("+420650111222", None), Fast::Invalid); // not a CZ range
        assert_eq!(
            fast_e164("420601111222", Some(Region::CZ)),
            Fast::AskLibrary
        );
        assert_eq!(fast_e164("+14155550123", None), Fast::AskLibrary); // +1 is shared
    }

    #[test]
    fn text_is_trimmed_lowercased_and_collapsed() {
        assert_eq!(
            normalize_text("  Hello \t\n  WORLD  ").as_deref(),
            Some("hello world")
        );
        assert_eq!(normalize_text("a").as_deref(), Some("a"));
    }

    #[test]
    fn text_accents_are_stripped() {
        assert_eq!(
            normalize_text("Žluťoučký  Kůň ").as_deref(),
            Some("zlutoucky kun")
        );
        assert_eq!(
            normalize_text("Ångström  Café").as_deref(),
            Some("angstrom cafe")
        );
    }

    #[test]
    fn text_compatibility_forms_fold_to_plain_letters() {
        // Ligature, fullwidth letters and a no-break space between words.
        assert_eq!(
            normalize_text("ﬁle ＡＢＣ\u{a0}\u{a0}x").as_deref(),
            Some("file abc x")
        );
    }

    #[test]
    fn text_empty_or_whitespace_is_none() {
        for s in ["", " ", "\t\n ", "\u{a0}", "\u{301}", " \u{301} "] {
            assert_eq!(normalize_text(s), None, "{s:?}");
        }
    }

    #[test]
    fn email_is_trimmed_and_lowercased() {
        assert_eq!(
            normalize_email(" John.Doe@Example.COM ", false).as_deref(),
            Some("john.doe@example.com")
        );
        assert_eq!(
            normalize_email("ÉMILE@Example.cz", false).as_deref(),
            Some("émile@example.cz")
        );
    }

    #[test]
    fn email_without_one_at_and_both_parts_is_none() {
        for s in [
            "",
            "   ",
            "john",
            "@example.com",
            "john@",
            "@",
            "a@b@c",
            " @x.cz",
        ] {
            assert_eq!(normalize_email(s, false), None, "{s:?}");
            assert_eq!(normalize_email(s, true), None, "{s:?}");
        }
    }

    #[test]
    fn email_canonical_folds_googlemail_dots_and_tag() {
        assert_eq!(
            normalize_email("John.Doe+news@GoogleMail.com", true).as_deref(),
            Some("johndoe@gmail.com")
        );
        assert_eq!(
            normalize_email("j.o.h.n@gmail.com", true).as_deref(),
            Some("john@gmail.com")
        );
        assert_eq!(
            normalize_email("John.Doe+news@GoogleMail.com", false).as_deref(),
            Some("john.doe+news@googlemail.com")
        );
    }

    #[test]
    fn email_plus_tag_is_dropped_only_when_canonical() {
        assert_eq!(
            normalize_email("a+b@example.com", true).as_deref(),
            Some("a@example.com")
        );
        assert_eq!(
            normalize_email("a+b@example.com", false).as_deref(),
            Some("a+b@example.com")
        );
    }

    #[test]
    fn email_canonical_keeps_dots_outside_gmail() {
        assert_eq!(
            normalize_email("John.Doe@Example.com", true).as_deref(),
            Some("john.doe@example.com")
        );
    }

    #[test]
    fn email_canonical_with_empty_mailbox_is_none() {
        assert_eq!(normalize_email("+tag@example.com", true), None);
        assert_eq!(normalize_email("...@gmail.com", true), None);
        assert_eq!(
            normalize_email("+tag@example.com", false).as_deref(),
            Some("+tag@example.com")
        );
    }

    #[test]
    fn phone_formats_all_normalise_to_e164() {
        for s in [
            "+420 601 111 222",
            "00420601111222",
            "+420601111222",
            "601-111-222",
            " (+420) 601.111.222 ",
            "420 601 111 222",
            "0042 0601111222",
        ] {
            assert_eq!(
                normalize_phone(s, CZ).as_deref(),
                Some("+420601111222"),
                "{s:?}"
            );
        }
    }

    #[test]
    fn phone_national_number_needs_a_region() {
        assert_eq!(normalize_phone("601-111-222", None), None);
        assert_eq!(
            normalize_phone("+420 601 111 222", None).as_deref(),
            Some("+420601111222")
        );
    }

    #[test]
    fn phone_zero_zero_prefix_works_without_region() {
        assert_eq!(
            normalize_phone("00420601111222", None).as_deref(),
            Some("+420601111222")
        );
        assert_eq!(
            normalize_phone("0044 20 7946 0958", None).as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            normalize_phone("00420 601 111 222 ext. 5", None).as_deref(),
            Some("+420601111222")
        );
    }

    #[test]
    fn phone_garbage_is_none() {
        for s in [
            "abc",
            "+",
            "123",
            "",
            "   ",
            "00",
            "N/A",
            "john@example.com",
            "601111222@example.com",
            "0000000000",
            "+0420601111222",
            "+420 601 111 222 333 444 555 666",
        ] {
            assert_eq!(normalize_phone(s, CZ), None, "{s:?}");
            assert_eq!(normalize_phone(s, None), None, "{s:?}");
        }
        assert_eq!(normalize_phone(&"1".repeat(300), CZ), None);
    }

    #[test]
    fn phone_invalid_number_is_none() {
        // Parses, but no Czech range starts with 1.
        assert_eq!(normalize_phone("+420 123 456 789", CZ), None);
    }

    #[test]
    fn phone_international_number_ignores_default_region_rules() {
        // libphonenumber would apply CZ's prefix rules and call this invalid.
        assert_eq!(
            normalize_phone("+49 030 1234567", CZ).as_deref(),
            Some("+49301234567")
        );
        assert_eq!(
            normalize_phone("+44 (0)20 7946 0958", CZ).as_deref(),
            Some("+442079460958")
        );
    }

    #[test]
    fn phone_other_regions_use_their_national_rules() {
        let cases = [
            ("020 7946 0958", "GB", "+442079460958"),
            ("06 1234 5678", "IT", "+390612345678"),
            ("(650) 253-0000", "US", "+16502530000"),
            ("011 420 601 111 222", "US", "+420601111222"),
            ("0905 123 456", "sk", "+421905123456"),
        ];
        for (s, region, want) in cases {
            assert_eq!(
                normalize_phone(s, Some(region)).as_deref(),
                Some(want),
                "{s:?}"
            );
        }
    }

    #[test]
    fn phone_extension_uri_and_letters_go_through_the_library() {
        assert_eq!(
            normalize_phone("+420 601 111 222 ext. 5", CZ).as_deref(),
            Some("+420601111222")
        );
        assert_eq!(
            normalize_phone("tel:+420601111222", None).as_deref(),
            Some("+420601111222")
        );
        assert_eq!(
            normalize_phone("1-800-FLOWERS", Some("US")).as_deref(),
            Some("+18003569377")
        );
    }

    #[test]
    fn phone_e164_matches_library_formatting() {
        for s in ["+420601111222", "+39 06 1234 5678", "+44 20 7946 0958"] {
            let number = phonenumber::parse(None, s).unwrap();
            let library = number.format().mode(phonenumber::Mode::E164).to_string();
            assert_eq!(normalize_phone(s, None), Some(library), "{s:?}");
        }
    }

    #[test]
    fn phone_unknown_region_string_acts_as_no_region() {
        assert_eq!(normalize_phone("601111222", Some("XX")), None);
        assert_eq!(
            normalize_phone("+420601111222", Some("XX")).as_deref(),
            Some("+420601111222")
        );
    }

    #[test]
    fn phone_never_panics_on_generated_garbage() {
        const ALPHABET: &[char] = &[
            '0', '1', '2', '4', '6', '9', '+', ' ', '-', '(', ')', '.', '/', ';', ':', '=', 'x',
            'e', 't', 'l', 'A', '#', '*', '@', 'ž', '٣', '０', '\u{a0}',
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            // xorshift64: deterministic, no dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut input = String::new();
        for _ in 0..20_000 {
            input.clear();
            let len = (next() % 24) as usize;
            for _ in 0..len {
                input.push(ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
            }
            for region in [None, Some(Region::CZ), Some(Region::US)] {
                if let Some(e164) = normalize_phone_in(&input, region) {
                    assert!(e164.starts_with('+'), "{input:?} -> {e164:?}");
                    assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()), "{input:?}");
                }
            }
        }
    }

    #[test]
    fn region_parses_iso_codes_in_any_case() {
        assert_eq!(parse_region("CZ"), Ok(Region::CZ));
        assert_eq!(parse_region("cz"), Ok(Region::CZ));
        assert_eq!(parse_region(" De "), Ok(Region::DE));
    }

    #[test]
    fn region_unknown_code_is_an_error_naming_it() {
        for s in ["XX", "", "CZE", "Czechia", "C", "ČZ", "001"] {
            let err = parse_region(s).unwrap_err();
            assert!(err.contains(&format!("{s:?}")), "{err}");
            assert!(err.contains("ISO 3166"), "{err}");
        }
    }

    #[test]
    fn normalizer_from_config_builds_each_kind() {
        assert_eq!(
            Normalizer::from_config("text", None, false),
            Ok(Normalizer::Text)
        );
        assert_eq!(
            Normalizer::from_config("email", None, true),
            Ok(Normalizer::Email { canonical: true })
        );
        assert_eq!(
            Normalizer::from_config("phone", Some("cz"), false),
            Ok(Normalizer::Phone {
                default_region: Some(Region::CZ)
            })
        );
        assert_eq!(
            Normalizer::from_config("phone", None, false),
            Ok(Normalizer::Phone {
                default_region: None
            })
        );
        assert_eq!(
            Normalizer::from_config("exact", None, false),
            Ok(Normalizer::Exact)
        );
        assert_eq!(Normalizer::default(), Normalizer::Text);
        for name in Normalizer::NAMES {
            let normalizer = Normalizer::from_config(name, None, false).unwrap();
            assert_eq!(normalizer.name(), name);
        }
    }

    #[test]
    fn normalizer_unknown_name_lists_valid_names() {
        let err = Normalizer::from_config("fuzzy", None, false).unwrap_err();
        assert!(err.contains("\"fuzzy\""), "{err}");
        assert!(
            err.contains("\"text\", \"email\", \"phone\", \"exact\""),
            "{err}"
        );
        assert!(Normalizer::from_config("Email", None, false).is_err());
    }

    #[test]
    fn normalizer_from_config_rejects_a_bad_region() {
        let err = Normalizer::from_config("phone", Some("XX"), false).unwrap_err();
        assert!(err.contains("\"XX\""), "{err}");
    }

    #[test]
    fn normalizer_apply_uses_its_normaliser() {
        let phone = Normalizer::Phone {
            default_region: Some(Region::CZ),
        };
        assert_eq!(phone.apply("601-111-222").as_deref(), Some("+420601111222"));
        assert_eq!(phone.apply("abc"), None);
        assert_eq!(Normalizer::Text.apply(" Kůň ").as_deref(), Some("kun"));
        let email = Normalizer::Email { canonical: true };
        assert_eq!(
            email.apply("John.Doe+news@GoogleMail.com").as_deref(),
            Some("johndoe@gmail.com")
        );
    }

    #[test]
    fn normalizer_exact_keeps_the_value_and_only_empty_is_none() {
        assert_eq!(Normalizer::Exact.apply(" A  b ").as_deref(), Some(" A  b "));
        assert_eq!(Normalizer::Exact.apply("   ").as_deref(), Some("   "));
        assert_eq!(Normalizer::Exact.apply(""), None);
    }

    /// Prints ns/op; run with `cargo test --release merge -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark: prints timings, asserts nothing about them"]
    fn normalizers_ns_per_op_benchmark() {
        const N: usize = 100_000;
        let phones: Vec<String> = (0..N)
            .map(|i| {
                let (a, b) = (i % 1000, i / 1000 % 1000);
                match i % 4 {
                    0 => format!("+420 601 {a:03} {b:03}"),
                    1 => format!("00420601{a:03}{b:03}"),
                    2 => format!("+420601{a:03}{b:03}"),
                    _ => format!("601-{a:03}-{b:03}"),
                }
            })
            .collect();
        let garbage: Vec<String> = (0..N)
            .map(|i| ["", "N/A", "abc", "12", "john@example.com"][i % 5].to_owned())
            .collect();
        let emails: Vec<String> = (0..N)
            .map(|i| format!(" John.Doe{i}+news@GoogleMail.com "))
            .collect();
        let names: Vec<String> = (0..N)
            .map(|i| match i % 2 {
                0 => format!("  Jan  Novak {i} "),
                _ => format!("Žluťoučký  Kůň {i}"),
            })
            .collect();
        let cz = Some(Region::CZ);
        // Load libphonenumber's metadata outside the timing.
        black_box(normalize_phone_in("+420601111222", cz));

        let time = |label: &str, inputs: &[String], f: &dyn Fn(&str) -> Option<String>| {
            let start = Instant::now();
            let some = inputs.iter().filter(|s| black_box(f(s)).is_some()).count();
            let ns = start.elapsed().as_nanos() / inputs.len() as u128;
            println!("{label:<40} {ns:>6} ns/op  ({some}/{} Some)", inputs.len());
        };
        time("phone, 4 formats, region CZ", &phones, &|s| {
            normalize_phone_in(s, cz)
        });
        time("phone, library parse + is_valid only", &phones, &|s| {
            let number = phonenumber::parse(cz, s).ok()?;
            phonenumber::is_valid(&number).then(String::new)
        });
        time("phone, obvious garbage (fast path)", &garbage, &|s| {
            normalize_phone_in(s, cz)
        });
        time("email, canonical", &emails, &|s| normalize_email(s, true));
        time("text, half with accents", &names, &normalize_text);
    }
}
