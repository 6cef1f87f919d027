/* Internal to the schema files (schema.c, schema_format.c, schema_registry.c,
 * schema_cli.c): formats, ECMA-262 regular expressions over PCRE2, and the
 * document set the compiler and the registry share. Not installed. */
#ifndef BUS_SCHEMA_INTERNAL_H
#define BUS_SCHEMA_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>

#include "bus/schema.h"

/* ---- formats (schema_format.c) ---- */
enum {
    BUS__FMT_UNKNOWN = 0,
    BUS__FMT_DATE_TIME,
    BUS__FMT_DATE,
    BUS__FMT_TIME,
    BUS__FMT_EMAIL,
    BUS__FMT_HOSTNAME,
    BUS__FMT_IPV4,
    BUS__FMT_IPV6,
    BUS__FMT_URI,
    BUS__FMT_UUID,
    BUS__FMT_REGEX,
};
/* The format id of a `format` value; BUS__FMT_UNKNOWN for formats we ignore. */
int bus__schema_format_lookup(const char *name);
const char *bus__schema_format_name(int fmt);
/* 1 when `s` (len bytes, NUL-terminated) is valid for fmt, else 0. */
int bus__schema_format_check(int fmt, const char *s, size_t len);

/* Number of Unicode code points in UTF-8 text (continuation bytes skipped). */
size_t bus__utf8_length(const char *s, size_t len);

/* Compiles an ECMA-262 regular expression for PCRE2 (UTF, `$` only at the
 * end, `.` excluding line terminators, `\s` the ECMA white space set).
 * Returns NULL with the reason in err. The caller frees with pcre2_code_free.
 * Thread-safe. */
pcre2_code *bus__schema_regex_compile(const char *src, char *err, size_t errlen);
/* Searches `re` in s[0..len) with this thread's match block (created on
 * first use, freed when the thread exits). Returns 1 match, 0 no match,
 * -1 error (invalid UTF-8, match limit, out of memory). Thread-safe. */
int bus__schema_regex_search(const pcre2_code *re, const char *s, size_t len);

/* ---- the document set (schema.c) ---- */
typedef struct bus__sset bus__sset_t;

/* A set of documents whose `$ref`s resolve among each other. `dir` (may be
 * NULL) allows loading sibling files on demand (bus_schema_load_file). */
bus__sset_t *bus__sset_new(void);
void bus__sset_free(bus__sset_t *set);
/* Lets unresolved refs load files: relative to the referring file, and by
 * `$id` among the .json files under `search_dir` (may be NULL). */
int bus__sset_allow_files(bus__sset_t *set, const char *search_dir);
/* Adds a document (ownership of `json` moves to the set, even on failure)
 * and compiles its root. `file` (may be NULL) names it in errors and gives
 * its file URI. `*root` gets the compiled root. On failure err holds
 * "<file>: <pointer>: <reason>". Returns 0, BUS_EINVALID or BUS_EINTERNAL. */
int bus__sset_add(bus__sset_t *set, cJSON *json, const char *file, const char *base_uri,
                  bus_schema_t **root, char *err, size_t errlen);
/* Resolves every pending `$ref` (loading files when allowed) and checks for
 * `$ref` loops that never reach a deeper instance. Returns 0 or BUS_EINVALID. */
int bus__sset_link(bus__sset_t *set, char *err, size_t errlen);
/* The compiled node at `pointer` (a JSON pointer, "" for root itself)
 * inside root's document, compiling and linking it when it was not a schema
 * location yet. *out is NULL when the location does not exist.
 * Returns 0, BUS_EINVALID or BUS_EINTERNAL. */
int bus__sset_node_at(bus__sset_t *set, bus_schema_t *root, const char *pointer,
                      bus_schema_t **out, char *err, size_t errlen);
/* Marks `s` as the owner handle of its set: bus_schema_free(s) frees the set. */
void bus__sset_set_owner(bus__sset_t *set, bus_schema_t *s);

/* Reads a whole file; NULL on error. *len gets the size. Caller frees. */
char *bus__read_file(const char *path, size_t *len);
/* Parses JSON text (any length, not necessarily NUL-terminated) with
 * bus_json_parse; NULL with "not valid JSON (malformed JSON at byte N)" (or
 * the depth bound it hit) in err. The caller cJSON_Delete's the result. */
cJSON *bus__schema_parse_json(const char *text, size_t len, char *err, size_t errlen);

#endif
