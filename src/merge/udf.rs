//! `duckmerge_normalize(value, spec)`: the key normalisers as a DuckDB scalar
//! function, so the merge's SQL uses exactly the (unit-tested) Rust code.
//! `spec` is `text`, `email`, `email:canonical`, `phone`, `phone:CZ` or `exact`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use duckdb::vscalar::{ArrowFunctionSignature, VArrowScalar};

use super::normalize::Normalizer;

/// The SQL name of the function.
pub const FUNCTION: &str = "duckmerge_normalize";

/// Parses a spec such as `phone:CZ` into a normaliser.
pub fn parse_spec(spec: &str) -> Result<Normalizer, String> {
    let (name, arg) = spec.split_once(':').unwrap_or((spec, ""));
    match name {
        "email" => Normalizer::from_config("email", None, arg == "canonical"),
        "phone" => Normalizer::from_config("phone", (!arg.is_empty()).then_some(arg), false),
        other => Normalizer::from_config(other, None, false),
    }
}

/// The DuckDB scalar function.
pub struct NormalizeFunction;

impl VArrowScalar for NormalizeFunction {
    type State = ();

    fn invoke(
        _: &Self::State,
        input: RecordBatch,
    ) -> Result<Arc<dyn Array>, Box<dyn std::error::Error>> {
        let values = input
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or("duckmerge_normalize: value must be VARCHAR")?;
        let specs = input
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or("duckmerge_normalize: spec must be VARCHAR")?;
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 16);
        // The spec is a constant in practice: parse it once per distinct value.
        let mut cached: Option<(String, Normalizer)> = None;
        for i in 0..values.len() {
            if values.is_null(i) || specs.is_null(i) {
                out.append_null();
                continue;
            }
            let spec = specs.value(i);
            if cached.as_ref().map(|(s, _)| s.as_str()) != Some(spec) {
                cached = Some((spec.to_string(), parse_spec(spec)?));
            }
            let normalizer = &cached.as_ref().expect("set above").1;
            match normalizer.apply(values.value(i)) {
                Some(v) => out.append_value(v),
                None => out.append_null(),
            }
        }
        Ok(Arc::new(out.finish()) as ArrayRef)
    }

    fn signatures() -> Vec<ArrowFunctionSignature> {
        vec![ArrowFunctionSignature::exact(
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
        )]
    }
}

/// Registers `duckmerge_normalize` in the database `conn` belongs to.
pub fn register(conn: &duckdb::Connection) -> duckdb::Result<()> {
    conn.register_scalar_function::<NormalizeFunction>(FUNCTION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_function_normalises_like_the_rust_code() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let row: (Option<String>, Option<String>, Option<String>) = conn
            .query_row(
                "SELECT duckmerge_normalize('601-111-222', 'phone:CZ'), \
                        duckmerge_normalize(' A.B+x@GoogleMail.com ', 'email:canonical'), \
                        duckmerge_normalize('abc', 'phone')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(row.0.as_deref(), Some("+420601111222"));
        assert_eq!(row.1.as_deref(), Some("ab@gmail.com"));
        assert_eq!(row.2, None);
    }

    #[test]
    fn specs_parse_or_explain() {
        assert!(parse_spec("phone:CZ").is_ok());
        assert!(parse_spec("email:canonical").is_ok());
        assert!(parse_spec("soundex").is_err());
    }
}
