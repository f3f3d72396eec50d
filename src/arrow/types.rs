//! Arrow types → DuckDB column types, and the few casts a load makes first.

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::backend::quote_ident;
use crate::error::{Error, Result};

/// The DuckDB column type for an Arrow type (after [`normalize_type`]).
pub fn arrow_to_duckdb_sql(dt: &DataType) -> Result<String> {
    Ok(match dt {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Timestamp(TimeUnit::Second, None) => "TIMESTAMP_S".into(),
        DataType::Timestamp(TimeUnit::Millisecond, None) => "TIMESTAMP_MS".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "TIMESTAMP".into(),
        DataType::Timestamp(TimeUnit::Nanosecond, None) => "TIMESTAMP_NS".into(),
        DataType::Duration(_) | DataType::Interval(_) => "INTERVAL".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s)
            if *p <= 38 =>
        {
            format!("DECIMAL({p},{s})")
        }
        DataType::Decimal256(_, _) => "DOUBLE".into(),
        DataType::List(f) | DataType::LargeList(f) => {
            format!("{}[]", arrow_to_duckdb_sql(f.data_type())?)
        }
        DataType::FixedSizeList(f, n) => format!("{}[{n}]", arrow_to_duckdb_sql(f.data_type())?),
        DataType::Struct(fields) => {
            let parts = fields
                .iter()
                .map(|f| {
                    Ok(format!(
                        "{} {}",
                        quote_ident(f.name()),
                        arrow_to_duckdb_sql(f.data_type())?
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            format!("STRUCT({})", parts.join(", "))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP({}, {})",
                arrow_to_duckdb_sql(kv[0].data_type())?,
                arrow_to_duckdb_sql(kv[1].data_type())?
            ),
            other => {
                return Err(Error::Arrow(format!(
                    "unsupported Arrow map layout {other}"
                )))
            }
        },
        DataType::Dictionary(_, value) => arrow_to_duckdb_sql(value)?,
        other => {
            return Err(Error::Arrow(format!(
                "Arrow type {other} has no DuckDB column type; cast it first"
            )))
        }
    })
}

/// The type a column is loaded as: the few types DuckDB's Arrow conversion
/// does not take, or would turn into another column type than the staging
/// table's, become plain ones (dictionaries → their values rather than an
/// ENUM, null → VARCHAR, float16 → float32). Nested types are normalised
/// inside.
fn normalize_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Null => DataType::Utf8,
        DataType::Float16 => DataType::Float32,
        DataType::Dictionary(_, value) => normalize_type(value),
        DataType::List(f) => DataType::List(normalize_field(f)),
        DataType::LargeList(f) => DataType::LargeList(normalize_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(normalize_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(normalize_field).collect()),
        other => other.clone(),
    }
}

fn normalize_field(f: &Arc<Field>) -> Arc<Field> {
    let dt = normalize_type(f.data_type());
    if &dt == f.data_type() {
        f.clone()
    } else {
        Arc::new(f.as_ref().clone().with_data_type(dt).with_nullable(true))
    }
}

/// The schema batches are loaded with.
pub fn normalize_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(normalize_field)
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// Casts a batch to `target` (from [`normalize_schema`]); a no-op when the
/// types already match.
pub fn normalize_batch(batch: RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields().len() != target.fields().len() {
        return Err(Error::Arrow(format!(
            "batch has {} columns, the stream's schema {}",
            batch.num_columns(),
            target.fields().len()
        )));
    }
    let same = batch
        .schema()
        .fields()
        .iter()
        .zip(target.fields())
        .all(|(a, b)| a.data_type() == b.data_type());
    if same {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(col, field)| -> Result<ArrayRef> {
            if col.data_type() == field.data_type() {
                Ok(col.clone())
            } else if col.data_type() == &DataType::Null {
                Ok(new_null_array(field.data_type(), col.len()))
            } else {
                cast(col, field.data_type())
                    .map_err(|e| Error::Arrow(format!("column \"{}\": {e}", field.name())))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(target.clone(), columns).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, DictionaryArray, Int32Array, NullArray, StringArray};
    use arrow::datatypes::Int32Type;

    #[test]
    fn nested_types_map_to_duckdb_syntax() {
        let st = DataType::Struct(
            vec![
                Field::new("a", DataType::Int64, true),
                Field::new("b c", DataType::Utf8, true),
            ]
            .into(),
        );
        assert_eq!(
            arrow_to_duckdb_sql(&st).unwrap(),
            "STRUCT(\"a\" BIGINT, \"b c\" VARCHAR)"
        );
        let list = DataType::List(Arc::new(Field::new(
            "item",
            DataType::Decimal128(18, 3),
            true,
        )));
        assert_eq!(arrow_to_duckdb_sql(&list).unwrap(), "DECIMAL(18,3)[]");
        assert_eq!(
            arrow_to_duckdb_sql(&DataType::Timestamp(TimeUnit::Microsecond, None)).unwrap(),
            "TIMESTAMP"
        );
    }

    #[test]
    fn dictionary_and_null_columns_are_cast_for_the_load() {
        let dict: DictionaryArray<Int32Type> = vec!["x", "y", "x"].into_iter().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", dict.data_type().clone(), true),
            Field::new("n", DataType::Null, true),
            Field::new("i", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(dict),
                Arc::new(NullArray::new(3)),
                Arc::new(Int32Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let target = normalize_schema(&schema);
        let out = normalize_batch(batch, &target).unwrap();
        let d = out
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(d.value(2), "x");
        assert_eq!(out.column(1).data_type(), &DataType::Utf8);
        assert_eq!(out.column(1).null_count(), 3);
    }
}
