// A query's rows as Arrow arrays that DuckDB's worker threads build while it
// runs: the `ArrowFormat` result of DuckDB 2.0 (one Arrow appender per worker,
// arrays cut at the scan's batch boundaries, handed out in the result's
// order), read as a stream, with a batch size of our choosing.
//
// DuckDB's C API offers this result only with 2,048-row arrays
// (`duckdb_execute_prepared_arrow`), materialised first; DuckDB's ADBC driver
// and its C API v2 reach it through the C++ calls used here. Built against the
// exact DuckDB sources `libduckdb-sys` compiles (its `cargo:include`), with
// the same NDEBUG/DEBUG define; see build.rs.

#include <cstdlib>
#include <cstring>

#include "duckdb/common/arrow/arrow_format.hpp"
#include "duckdb/common/arrow/nanoarrow/nanoarrow.hpp"
#include "duckdb.h"
#include "duckdb/main/connection.hpp"
#include "duckdb/main/query_parameters.hpp"
#include "duckdb/main/query_result_stream.hpp"

namespace {

struct ArrowStreamHandle {
	duckdb::unique_ptr<duckdb::QueryResultStream<duckdb::ArrowFormat>> stream;
};

char *CopyError(const std::string &message) {
	auto out = static_cast<char *>(malloc(message.size() + 1));
	if (out) {
		memcpy(out, message.c_str(), message.size() + 1);
	}
	return out;
}

} // namespace

//! Submits `sql` (one statement, no parameters) on `connection` and opens
//! its result as a stream of Arrow arrays of up to `batch_size` rows; fills
//! `out_schema`. Returns the stream, or null with `*out_error` set (free it
//! with duckmerge_free_error). Not a prepared statement: DuckDB runs those
//! through an internal EXECUTE whose plan does not give the result sink batch
//! indexes, so an ordered result would be collected on one thread.
extern "C" void *duckmerge_arrow_stream_open(duckdb_connection connection, const char *sql, idx_t batch_size,
                                             ArrowSchema *out_schema, char **out_error) {
	*out_error = nullptr;
	auto conn = reinterpret_cast<duckdb::Connection *>(connection);
	if (!conn || !sql) {
		*out_error = CopyError("no connection or no query");
		return nullptr;
	}
	try {
		duckdb::QueryParameters parameters(duckdb::make_shared_ptr<duckdb::ArrowFormat>(batch_size));
		auto result = conn->context->Submit(std::string(sql), parameters);
		if (result->HasError()) {
			*out_error = CopyError(result->GetError());
			return nullptr;
		}
		auto handle = new ArrowStreamHandle();
		handle->stream = duckdb::make_uniq<duckdb::QueryResultStream<duckdb::ArrowFormat>>(std::move(result));
		// The stream owns its schema: hand out a deep copy the caller releases.
		auto &schema = handle->stream->FormatState().Schema();
		if (duckdb_nanoarrow::ArrowSchemaDeepCopy(&schema, out_schema) != NANOARROW_OK) {
			delete handle;
			*out_error = CopyError("could not copy the result's Arrow schema");
			return nullptr;
		}
		return handle;
	} catch (std::exception &ex) {
		*out_error = CopyError(duckdb::ErrorData(ex).Message());
	} catch (...) {
		*out_error = CopyError("the query failed");
	}
	return nullptr;
}

//! The next array (running the query's tasks on the calling thread until one
//! is ready): 1 with `*out` filled, 0 at the end, -1 with `*out_error` set.
extern "C" int duckmerge_arrow_stream_next(void *stream, ArrowArray *out, char **out_error) {
	*out_error = nullptr;
	auto handle = static_cast<ArrowStreamHandle *>(stream);
	try {
		auto array = handle->stream->Fetch();
		if (!array) {
			if (handle->stream->HasError()) {
				*out_error = CopyError(handle->stream->GetError());
				return -1;
			}
			return 0;
		}
		array->MoveTo(*out);
		return 1;
	} catch (std::exception &ex) {
		*out_error = CopyError(duckdb::ErrorData(ex).Message());
	} catch (...) {
		*out_error = CopyError("reading the result failed");
	}
	return -1;
}

//! Ends the query if it still runs and frees the stream.
extern "C" void duckmerge_arrow_stream_close(void *stream) {
	auto handle = static_cast<ArrowStreamHandle *>(stream);
	try {
		handle->stream->Close();
	} catch (...) {
	}
	delete handle;
}

extern "C" void duckmerge_free_error(char *error) {
	free(error);
}
