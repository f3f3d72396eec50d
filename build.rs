//! Compiles src/cpp (a few lines of C++ against DuckDB's own headers) into
//! the library, with the defines `libduckdb-sys` compiles DuckDB with.

fn main() {
    let include = std::env::var("DEP_DUCKDB_INCLUDE")
        .expect("libduckdb-sys publishes DuckDB's include directory (bundled feature)");
    let debug = std::env::var("DEBUG").is_ok_and(|v| v != "false" && v != "0");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("src/cpp/arrow_result.cpp")
        .include(&include)
        .flag_if_supported("-std=c++17")
        .flag_if_supported("/std:c++17")
        .flag_if_supported("/EHsc")
        .flag_if_supported("-w")
        .define(if debug { "DEBUG" } else { "NDEBUG" }, None);
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        // As libduckdb-sys builds DuckDB there: no dllimport on its symbols.
        build.define("DUCKDB_BUILD_LIBRARY", None);
    }
    build.compile("duckmerge_cpp");
    println!("cargo:rerun-if-changed=src/cpp/arrow_result.cpp");
    println!("cargo:rerun-if-env-changed=DEP_DUCKDB_INCLUDE");
}
