/* JSON Schema draft-07: compiled schemas, a registry loaded from schemas/,
 * validation with errors people can act on (docs/ARCHITECTURE.md, "Wire contract": Schemas).
 *
 * Compile once, validate many times. A schema document is parsed (cJSON),
 * checked against the draft-07 rules for keyword values, and compiled into a
 * tree of nodes; `$ref`s are resolved at load time (JSON pointers, `$id`s,
 * other files of the same registry or, for a single file, its siblings).
 * Anything wrong is refused at load with the file and the JSON pointer of
 * the broken place:
 *
 *   schemas/events/x.json: /properties/rank/enum: must be an array
 *
 * Semantics follow the draft-07 specification (json-schema-validation-01):
 * every keyword of the core and validation vocabularies, boolean schemas,
 * `$ref` siblings ignored, `format` as an assertion for date-time, date,
 * time, email, hostname, ipv4, ipv6, uri, uuid and regex (unknown formats
 * are ignored, as the specification allows). `pattern` and
 * `patternProperties` are ECMA-262 regular expressions, run with PCRE2 in
 * UTF mode with `$` matching only at the very end. Numbers are compared as
 * doubles (cJSON's representation): 1.0 is an integer and equals 1.
 *
 * Ownership and threads:
 * - bus_schema_t and bus_schema_registry_t are immutable after load and may
 *   be used from any number of threads at once. The cJSON a schema exposes
 *   (bus_schema_json) is read-only and lives as long as its owner.
 * - A schema returned by bus_schema_compile/bus_schema_load_file is owned by
 *   the caller (bus_schema_free). A schema returned by a registry look-up is
 *   owned by the registry: valid until bus_schema_registry_free, never freed
 *   by the caller.
 * - Validation allocates nothing on a valid instance (patterns use one
 *   PCRE2 match block per thread, created on first use and freed when the
 *   thread exits); failure messages that print a JSON value (enum, const)
 *   allocate briefly. Results live in a caller-provided bus_schema_result_t
 *   (no heap, no free; it is about 9 KB: keep it off small stacks).
 * - Limits: a validation visits at most 2,000,000 schema nodes and nests
 *   at most 2,000 deep; beyond that it fails with keyword "limit" (a
 *   pathological schema costs milliseconds, never a hang). Regular
 *   expressions run under a PCRE2 match limit; a match that hits it fails.
 * - Not supported: `$ref` to remote (http) documents other than files of
 *   the same registry or directory (the draft-07 meta-schema included);
 *   numbers beyond 2^53 compare as doubles.
 */
#ifndef BUS_SCHEMA_H
#define BUS_SCHEMA_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct bus_schema bus_schema_t;
typedef struct bus_schema_registry bus_schema_registry_t;

/* At most this many failures are collected per validation; further ones
 * only set `truncated`, so a huge bad document costs little. */
#define BUS_SCHEMA_MAX_ERRORS 20
/* Storage for the strings of one result (paths and messages); longer
 * strings are cut with "...". */
#define BUS_SCHEMA_RESULT_BUF 8192

/* One failure. All three strings point into the owning result. */
typedef struct {
    const char *path;    /* JSON pointer of the instance location, with the
                            caller's prefix: "/data/rank"; "" is the root */
    const char *keyword; /* the rule that failed: "enum", "required", ... */
    const char *message; /* "must be one of \"R1\",\"R2\"" */
} bus_schema_error_t;

/* Filled by bus_schema_validate. errors[0..count) are sorted stably by
 * instance path (segment by segment, array indices numerically), then in
 * the order the rules were checked. */
typedef struct {
    size_t count;
    int truncated; /* 1 when more than BUS_SCHEMA_MAX_ERRORS failures existed */
    bus_schema_error_t errors[BUS_SCHEMA_MAX_ERRORS];
    size_t used_; /* private */
    char buf_[BUS_SCHEMA_RESULT_BUF]; /* private */
} bus_schema_result_t;

/* ---- compiling one schema ---- */

/* Compiles `doc` (a schema: object or boolean). The document is deep-copied;
 * the caller keeps ownership of `doc`. `base_uri` is the document's URI when
 * it has no `$id` (may be NULL: "urn:bus:schema"). `$ref`s may only point
 * inside the document. On failure writes "<pointer>: <reason>" into err.
 * Returns 0, BUS_EINVALID (broken schema) or BUS_EINTERNAL (out of memory). */
int bus_schema_compile(const cJSON *doc, const char *base_uri, bus_schema_t **out, char *err,
                       size_t errlen);

/* Reads and compiles a schema file. A `$ref` to another document is resolved
 * against the file's `$id` and, failing that, as a path relative to the
 * file's directory (sibling files are loaded as needed); an absolute `$id`
 * URI is also looked for among the .json files under the file's directory
 * (under its parent when that directory is events/ or rpc/, i.e. the whole
 * schemas/ tree). Errors read "<file>: <pointer>: <reason>".
 * Returns 0, BUS_ENOT_FOUND (file unreadable), BUS_EINVALID (not JSON or a
 * broken schema) or BUS_EINTERNAL. */
int bus_schema_load_file(const char *path, bus_schema_t **out, char *err, size_t errlen);

/* Frees a schema from bus_schema_compile/bus_schema_load_file (NULL is fine).
 * Never call it on a schema from a registry. */
void bus_schema_free(bus_schema_t *s);

/* The schema's JSON, read-only; valid while the schema (or its registry) lives. */
const cJSON *bus_schema_json(const bus_schema_t *s);
/* The absolute base URI the schema was resolved against (its `$id` or the
 * file's URI). Same lifetime as the schema. */
const char *bus_schema_uri(const bus_schema_t *s);

/* ---- validating ---- */

/* Validates `instance` against `s`. `prefix` (may be NULL) is prepended to
 * every reported path, e.g. "/data" to report "/data/rank".
 * Returns 0 when valid, BUS_EINVALID when not (failures in `out`).
 * `out` is always filled (count 0 when valid). */
int bus_schema_validate_at(const bus_schema_t *s, const cJSON *instance, const char *prefix,
                           bus_schema_result_t *out);
/* Same with no prefix. */
int bus_schema_validate(const bus_schema_t *s, const cJSON *instance, bus_schema_result_t *out);

/* Formats the failures as one line "path: message; path: message"
 * ("(root)" stands for the empty path; "; ..." ends a truncated list).
 * Writes at most cap bytes including the NUL; returns the length it would
 * have needed (snprintf-style). */
size_t bus_schema_result_format(const bus_schema_result_t *r, char *buf, size_t cap);
/* Formats one failure as "path: message" (same conventions). */
size_t bus_schema_error_format(const bus_schema_error_t *e, char *buf, size_t cap);

/* ---- the registry of schemas/ ---- */

/* Loads every *.json under `dir` (recursively). events/<type>.json is the
 * schema of the `data` of events of that type; rpc/<service>.<method>.json
 * is one document whose definitions.params and definitions.result are the
 * schemas of the RPC params and of the success result's data; any other
 * file is only a `$ref` target. Every file is known by its `$id` and by its
 * file URI, so `$ref`s between files resolve. The first broken file stops
 * the load: "<file>: <pointer>: <reason>" in err.
 * Returns 0, BUS_ENOT_FOUND (no such directory), BUS_EINVALID or
 * BUS_EINTERNAL. The caller owns *out (bus_schema_registry_free). */
int bus_schema_registry_load(const char *dir, bus_schema_registry_t **out, char *err,
                             size_t errlen);
void bus_schema_registry_free(bus_schema_registry_t *r);

/* The schema of the data of events of `type`; NULL when there is none. */
const bus_schema_t *bus_schema_registry_event(const bus_schema_registry_t *r, const char *type);
/* The params / result schema of service.method; NULL when the method or
 * that definition does not exist. */
const bus_schema_t *bus_schema_registry_params(const bus_schema_registry_t *r, const char *service,
                                               const char *method);
const bus_schema_t *bus_schema_registry_result(const bus_schema_registry_t *r, const char *service,
                                               const char *method);
/* 1 when the registry has a file rpc/<service>.<method>.json, else 0. */
int bus_schema_registry_has_method(const bus_schema_registry_t *r, const char *service,
                                   const char *method);

/* Iteration, sorted by name. Indices run over [0, count). Returned strings
 * and schemas belong to the registry. */
size_t bus_schema_registry_event_count(const bus_schema_registry_t *r);
/* Type name of event i; *schema (may be NULL) gets its schema. NULL when out of range. */
const char *bus_schema_registry_event_at(const bus_schema_registry_t *r, size_t i,
                                         const bus_schema_t **schema);
size_t bus_schema_registry_method_count(const bus_schema_registry_t *r);
/* Method i: service and method names, and its params/result schemas (each
 * may be NULL). Any out-pointer may be NULL. Returns 0 or BUS_ENOT_FOUND
 * when out of range. `doc` gets the whole rpc file's JSON. */
int bus_schema_registry_method_at(const bus_schema_registry_t *r, size_t i, const char **service,
                                  const char **method, const bus_schema_t **params,
                                  const bus_schema_t **result, const cJSON **doc);

/* ---- busctl ---- */

/* `busctl schema check SCHEMA.json [INSTANCE.json|-]` (argv[0] = "check").
 * The instance comes from the file, or stdin when "-" or absent.
 * Exit codes: 0 valid; 1 invalid, one failure "path: message" per line on
 * stdout (an instance that is not JSON is invalid too); 2 usage, unreadable
 * file or broken schema, the reason on stderr. */
int bus_schema_check_main(int argc, char **argv);

/* `busctl schema list [--dir DIR]` (argv[0] = "list"): one line per event
 * type ("event <type>") and per RPC method ("rpc <service>.<method>
 * params=yes|no result=yes|no"). DIR defaults to $BUS_SCHEMAS_DIR, then
 * "schemas". Exit 0, or 2 with the reason on stderr. */
int bus_schema_list_main(int argc, char **argv);

#endif
