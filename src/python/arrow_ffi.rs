//! The Arrow PyCapsule interface, both ways, on arrow-rs's C stream FFI.
//!
//! `__arrow_c_stream__` hands out a capsule named `arrow_array_stream`
//! holding an `FFI_ArrowArrayStream`; a consumer moves the struct out (and
//! nulls its `release`), and an unconsumed capsule releases it when Python
//! frees the capsule (`FFI_ArrowArrayStream`'s `Drop`). Importing is the
//! reverse. This is all duckmerge needed from pyo3-arrow, whose releases
//! follow arrow-rs with a delay and would otherwise pin arrow's version.

use std::ffi::CString;
use std::sync::{Arc, Mutex};

use arrow::array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ffi::FFI_ArrowSchema;
use arrow::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

/// A boxed stream of record batches, as the C stream interface carries it.
pub type BatchReader = Box<dyn RecordBatchReader + Send>;

/// Finished batches as a [`BatchReader`].
pub fn batches_reader(schema: SchemaRef, batches: Vec<RecordBatch>) -> BatchReader {
    Box::new(RecordBatchIterator::new(
        batches.into_iter().map(Ok),
        schema,
    ))
}

const STREAM: &std::ffi::CStr = c"arrow_array_stream";
const SCHEMA: &std::ffi::CStr = c"arrow_schema";

fn arrow_err(e: ArrowError) -> PyErr {
    PyValueError::new_err(format!("Arrow: {e}"))
}

/// The schema a consumer asked for (the `requested_schema` capsule), when
/// every column can be cast to it; otherwise the stream keeps its own
/// schema, as the PyCapsule interface allows.
fn requested(capsule: &Bound<'_, PyCapsule>, have: &Schema) -> PyResult<Option<SchemaRef>> {
    let ptr = capsule.pointer_checked(Some(SCHEMA))?;
    // SAFETY: a capsule named "arrow_schema" holds an ArrowSchema, which the
    // consumer keeps alive for this call; it is only read here.
    let ffi = unsafe { &*(ptr.as_ptr() as *const FFI_ArrowSchema) };
    let want = Schema::try_from(ffi).map_err(arrow_err)?;
    let castable = want.fields().len() == have.fields().len()
        && have
            .fields()
            .iter()
            .zip(want.fields())
            .all(|(h, w)| can_cast_types(h.data_type(), w.data_type()));
    if !castable || want.fields() == have.fields() {
        return Ok(None);
    }
    // Column names and metadata stay the producer's; only types change, and
    // a cast may turn a value it cannot convert into NULL, hence nullable.
    let fields: Vec<_> = have
        .fields()
        .iter()
        .zip(want.fields())
        .map(|(h, w)| {
            Arc::new(
                h.as_ref()
                    .clone()
                    .with_data_type(w.data_type().clone())
                    .with_nullable(true),
            )
        })
        .collect();
    Ok(Some(Arc::new(Schema::new_with_metadata(
        fields,
        have.metadata().clone(),
    ))))
}

fn cast_batch(batch: RecordBatch, to: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(to.fields())
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(to.clone(), columns)
}

/// Exports `reader` as an `arrow_array_stream` capsule, cast to
/// `requested_schema` when the consumer gave one that fits.
pub fn stream_capsule<'py>(
    py: Python<'py>,
    reader: BatchReader,
    requested_schema: Option<Bound<'py, PyCapsule>>,
) -> PyResult<Bound<'py, PyCapsule>> {
    let reader: BatchReader = match requested_schema {
        Some(capsule) => match requested(&capsule, &reader.schema())? {
            Some(to) => {
                let target = to.clone();
                Box::new(RecordBatchIterator::new(
                    reader.map(move |b| b.and_then(|b| cast_batch(b, &target))),
                    to,
                ))
            }
            None => reader,
        },
        None => reader,
    };
    let stream = FFI_ArrowArrayStream::new(reader);
    PyCapsule::new(py, stream, Some(CString::from(STREAM)))
}

/// Reads an object's `__arrow_c_stream__()` as a batch reader.
pub fn import_stream(data: &Bound<'_, PyAny>) -> PyResult<BatchReader> {
    let capsule = data.call_method0("__arrow_c_stream__")?;
    let capsule = capsule
        .cast::<PyCapsule>()
        .map_err(|_| PyTypeError::new_err("__arrow_c_stream__() did not return a PyCapsule"))?;
    let ptr = capsule.pointer_checked(Some(STREAM))?;
    // SAFETY: a capsule named "arrow_array_stream" holds an ArrowArrayStream;
    // from_raw moves it out and leaves the capsule's copy released-null, so
    // the capsule's destructor does not release it a second time.
    let stream = unsafe { FFI_ArrowArrayStream::from_raw(ptr.as_ptr() as *mut _) };
    let reader = RecordBatchStreamReader::try_new(stream).map_err(arrow_err)?;
    Ok(Box::new(reader))
}

/// Finished batches that Python consumers (pyarrow, polars) read through
/// the C stream interface, once.
#[pyclass(name = "_ArrowBatches", module = "duckmerge._duckmerge", frozen)]
pub struct ArrowBatches {
    inner: Mutex<Option<(SchemaRef, Vec<RecordBatch>)>>,
}

impl ArrowBatches {
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        ArrowBatches {
            inner: Mutex::new(Some((schema, batches))),
        }
    }
}

#[pymethods]
impl ArrowBatches {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let (schema, batches) = self
            .inner
            .lock()
            .map_err(|_| PyValueError::new_err("Arrow batches: lock poisoned"))?
            .take()
            .ok_or_else(|| PyValueError::new_err("these Arrow batches were already read"))?;
        stream_capsule(py, batches_reader(schema, batches), requested_schema)
    }
}
