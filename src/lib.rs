//! duckmerge's core: sessions around an embedded DuckDB, Arrow in and out,
//! and (behind the `python` feature) the PyO3 module `duckmerge._duckmerge`.

pub mod arrow;
pub mod backend;
pub mod csv;
pub mod error;
pub mod memory;
pub mod merge;
pub mod processor;
pub mod remote;
pub mod session;

#[cfg(feature = "python")]
mod python;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _duckmerge(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    python::register(m)
}
