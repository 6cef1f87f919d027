/* Internal to the schema files (schema.c, schema_compile.c, schema_ref.c,
 * schema_validate.c, schema_format.c, schema_registry.c, schema_cli.c):
 * formats, ECMA-262 regular expressions over PCRE2, the compiled form and
 * the document set the compiler, the linker, the validator and the registry
 * share. Not installed. */
#ifndef BUS_SCHEMA_INTERNAL_H
#define BUS_SCHEMA_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

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

/* ---- the compiled form ----
 *
 * Who does what:
 *   schema.c           the document set: its documents, nodes and strings,
 *                      adding documents (parsed, or read from a file), the
 *                      public compile / load / free entry points
 *   schema_compile.c   a schema location into a node: one row per keyword
 *   schema_ref.c       URIs ($id, $ref, base URIs), JSON pointers, loading
 *                      referenced files, linking `$ref`s, the loop check
 *   schema_validate.c  instances against nodes, and the result formatting
 * Everything here lives until the set is freed; nodes are immutable once the
 * set is linked, so validation only reads them. */

/* instance types, as bits (a node's `types`) */
#define T_NULL 0x01u
#define T_BOOLEAN 0x02u
#define T_OBJECT 0x04u
#define T_ARRAY 0x08u
#define T_NUMBER 0x10u
#define T_STRING 0x20u
#define T_INTEGER 0x40u

/* which numeric keywords a node has (its `nflags`) */
#define N_MULTIPLE 0x01u
#define N_MAX 0x02u
#define N_EXMAX 0x04u
#define N_MIN 0x08u
#define N_EXMIN 0x10u

/* The draft-07 type names with their bits, in the order messages list them
 * (schema_compile.c). */
typedef struct {
    const char *name;
    unsigned bit;
} bus__stype_t;
extern const bus__stype_t bus__schema_types[];
extern const size_t bus__schema_ntypes;

typedef struct bus__sset bus__sset_t;

/* A document of a set. */
typedef struct {
    char *file;     /* as given, for messages; NULL for in-memory documents */
    char *realfile; /* canonical path, for identity; NULL when none */
    char *uri;      /* the document's retrieval URI */
    cJSON *json;
} bus__sdoc_t;

/* A URI the set knows (file URI, `$id`, `#anchor`) and the location it names. */
typedef struct {
    char *uri; /* absolute, with a fragment only for "#anchor" ids */
    const cJSON *json;
    bus__sdoc_t *doc;
    const char *base; /* base URI in effect at that location */
    char *ptr;        /* JSON pointer of the location in its document */
} bus__sid_t;

typedef struct { /* a member of `properties` */
    const char *name;
    bus_schema_t *s;
} bus__sprop_t;
typedef struct { /* a member of `patternProperties` */
    pcre2_code *re;
    const char *src;
    bus_schema_t *s;
} bus__spattern_t;
typedef struct { /* a member of `dependencies` */
    const char *name;
    bus_schema_t *s;    /* schema form */
    const cJSON *names; /* array-of-names form */
} bus__sdep_t;

/* One compiled schema location. Strings and cJSON point into the set's
 * documents; arrays are the node's own (bus__schema_node_free). */
struct bus_schema {
    bus__sset_t *set;
    bus__sdoc_t *doc;
    const cJSON *json;
    const char *base;
    char *ptr;
    signed char boolean; /* -1: an object schema; 0/1: false/true */
    unsigned char unique, tuple_form, fmt, visit;
    unsigned types, nflags;
    bus_schema_t *ref;
    char *ref_uri;
    const char *ref_raw;
    const cJSON *enum_, *const_;
    double multiple_of, maximum, ex_maximum, minimum, ex_minimum;
    long long max_len, min_len, max_items, min_items, max_props, min_props; /* -1: absent */
    pcre2_code *pattern;
    const char *pattern_src;
    bus_schema_t *items, **tuple, *add_items, *contains;
    size_t ntuple;
    const char **required;
    size_t nrequired;
    bus__sprop_t *props; /* sorted by name */
    size_t nprops;
    uint32_t *ptab; /* open-addressing table over props: index + 1, 0 = empty */
    size_t ptab_mask;
    int *req_prop; /* per required name: its index in props, or -1 */
    bus__spattern_t *pprops;
    size_t npprops;
    bus_schema_t *add_props;
    bus__sdep_t *deps;
    size_t ndeps;
    bus_schema_t *prop_names, *if_, *then_, *else_, *not_;
    bus_schema_t **all_of, **any_of, **one_of;
    size_t nall, nany, none;
};

typedef struct {
    const cJSON *key;
    bus_schema_t *node;
} bus__snode_ent_t;

typedef struct {
    char *path;
    char *id; /* resolved $id or NULL */
} bus__sscan_t;

/* A set of documents whose `$ref`s resolve among each other. */
struct bus__sset {
    bus__sdoc_t **docs;
    size_t ndocs, capdocs;
    bus__sid_t *ids; /* schema_ref.c */
    size_t nids, capids;
    bus__snode_ent_t *map; /* schema location (cJSON) -> node, open addressing */
    size_t mapn, mapcap;
    bus_schema_t **nodes;
    size_t nnodes, capnodes;
    bus_schema_t **pending; /* nodes whose `$ref` is not resolved yet, from `linked` on */
    size_t npending, cappending, linked;
    char **strs; /* strings kept as long as the set (base URIs) */
    size_t nstrs, capstrs;
    int allow_files;
    char *search_dir;
    int scanned; /* the .json files under search_dir with their `$id` (schema_ref.c) */
    bus__sscan_t *scan;
    size_t nscan, capscan;
    bus_schema_t *owner;
};

/* FNV-1a over a NUL-terminated key; *len gets its length (one pass for
 * both). Indexes `properties` at compile time and finds them at validation. */
static inline uint32_t bus__key_hash(const char *k, size_t *len) {
    uint32_t h = 2166136261u;
    const unsigned char *p = (const unsigned char *)k;
    while (*p) {
        h ^= *p++;
        h *= 16777619u;
    }
    *len = (size_t)((const char *)p - k);
    return h;
}

/* ---- the set (schema.c) ---- */

/* An empty set; NULL when out of memory. */
bus__sset_t *bus__sset_new(void);
void bus__sset_free(bus__sset_t *set);
/* Lets unresolved refs load files: relative to the referring file, and by
 * `$id` among the .json files under `search_dir` (may be NULL). */
int bus__sset_allow_files(bus__sset_t *set, const char *search_dir);
/* Adds a document (ownership of `json` moves to the set, even on failure)
 * and compiles its root. `file` (may be NULL) names it in errors and gives
 * its file URI. `*root` (root may be NULL) gets the compiled root. On failure
 * err holds "<file>: <pointer>: <reason>". Returns 0, BUS_EINVALID or
 * BUS_EINTERNAL. */
int bus__sset_add(bus__sset_t *set, cJSON *json, const char *file, const char *base_uri,
                  bus_schema_t **root, char *err, size_t errlen);
/* Reads, parses and adds the file at `path` (bus__sset_add). Errors read
 * "<path>: cannot read: <why>" (BUS_ENOT_FOUND), "<path>: not valid JSON
 * (...)" (BUS_EINVALID) or those of bus__sset_add. */
int bus__sset_add_file(bus__sset_t *set, const char *path, bus_schema_t **root, char *err, size_t errlen);
/* Marks `s` as the owner handle of its set: bus_schema_free(s) frees the set. */
void bus__sset_set_owner(bus__sset_t *set, bus_schema_t *s);
/* The node compiled for the schema location `json`, or NULL. */
bus_schema_t *bus__sset_node(const bus__sset_t *set, const cJSON *json);
/* A new zeroed node for `json`, owned by the set and found by
 * bus__sset_node from now on; NULL when out of memory. */
bus_schema_t *bus__sset_new_node(bus__sset_t *set, const cJSON *json);
/* Keeps `s` (malloc'd) as long as the set; returns it, or NULL (s freed)
 * when out of memory. */
char *bus__sset_keep(bus__sset_t *set, char *s);
/* Grows *arr (of `elem`-byte elements, capacity *cap) to hold `need`;
 * 0, or -1 when out of memory (the array unchanged). */
int bus__schema_grow(void **arr, size_t *cap, size_t need, size_t elem);
/* The name of a document in messages: its file as given, else its URI. */
const char *bus__sdoc_name(const bus__sdoc_t *d);

/* ---- compiling (schema_compile.c) ---- */

/* Compiles the schema location `json` of `doc` (at JSON pointer
 * ptr + ptr_tail, ptr_tail may be NULL, with the base URI `base`) and every
 * schema under it, queuing their `$ref`s for bus__sset_link. A location
 * compiled before is returned as it is. *out gets the node (NULL on error).
 * On failure err holds "<file>: <pointer>: <reason>". Returns 0,
 * BUS_EINVALID or BUS_EINTERNAL. */
int bus__schema_compile_at(bus__sset_t *set, bus__sdoc_t *doc, const cJSON *json, const char *base,
                           const char *ptr, const char *ptr_tail, bus_schema_t **out, char *err,
                           size_t errlen);
/* Frees what compilation allocated for a node, and the node. */
void bus__schema_node_free(bus_schema_t *n);

/* ---- URIs and references (schema_ref.c) ---- */

/* The absolute URI of `ref` against `base` (RFC 3986 section 5), malloc'd;
 * an empty fragment is dropped. NULL when out of memory. */
char *bus__uri_resolve(const char *base, const char *ref);
/* "file://" + the absolute path `real`, percent-encoded; malloc'd. */
char *bus__file_uri(const char *real);
/* The location `uri` names, or NULL. */
const bus__sid_t *bus__sset_find_id(const bus__sset_t *set, const char *uri);
/* Registers uri -> location. Returns 0, 1 when the uri already names
 * another location, -1 when out of memory. */
int bus__sset_add_id(bus__sset_t *set, const char *uri, const cJSON *json, bus__sdoc_t *doc,
                     const char *base, const char *ptr);
/* Node n declares `$id` `id`: resolved against n->base and registered for
 * n's location; without a fragment it becomes n->base for n and every
 * schema under it. Returns 0, -1 when out of memory, 1 when the id already
 * names another location (*dup then gets the resolved id; caller frees). */
int bus__sset_declare_id(bus__sset_t *set, bus_schema_t *n, const char *id, char **dup);
/* Node n is `{"$ref": ref}`: resolves ref against n->base and queues n for
 * bus__sset_link. 0, or -1 when out of memory. */
int bus__sset_defer_ref(bus__sset_t *set, bus_schema_t *n, const char *ref);
/* Resolves every pending `$ref` (loading files when allowed) and checks for
 * `$ref` loops that never reach a deeper instance. Returns 0, BUS_EINVALID
 * or BUS_EINTERNAL. */
int bus__sset_link(bus__sset_t *set, char *err, size_t errlen);
/* The compiled node at `pointer` (a JSON pointer, "" for root itself)
 * inside root's document, compiling and linking it when it was not a schema
 * location yet. *out is NULL when the location does not exist.
 * Returns 0, BUS_EINVALID or BUS_EINTERNAL. */
int bus__sset_node_at(bus__sset_t *set, bus_schema_t *root, const char *pointer,
                      bus_schema_t **out, char *err, size_t errlen);

/* ---- files and JSON text (schema.c) ---- */

/* Reads a whole file; NULL on error. *len gets the size. Caller frees. */
char *bus__read_file(const char *path, size_t *len);
/* Parses JSON text (any length, not necessarily NUL-terminated) with
 * bus_json_parse; NULL with "not valid JSON (malformed JSON at byte N)" (or
 * the depth bound it hit) in err. The caller cJSON_Delete's the result. */
cJSON *bus__schema_parse_json(const char *text, size_t len, char *err, size_t errlen);

#endif
