/* The embedded SQLite backend of the store.
 *
 * One table per collection, "c_<name>" (id TEXT PRIMARY KEY, v INTEGER, doc
 * TEXT holding the JSON body without _id/_v), one table "_bus_processed" for
 * the exactly-once markers. Declared indexes are expression indexes on
 * json_extract(doc,'$.path'); queries build the very same expression so the
 * planner uses them.
 *
 * Concurrency: the file is in WAL mode, so readers never wait for the writer.
 * Every store thread has its own connection (found through a thread-local
 * table keyed by the store's unique id, never shared between threads); a
 * busy timeout makes writers of this and other processes queue for the write
 * lock instead of failing. Writes reach this file in groups (group commit,
 * see store.c): one BEGIN IMMEDIATE transaction per group, so the write lock
 * is taken up front (a deferred transaction upgrading from read to write
 * could fail with SQLITE_BUSY without waiting), one savepoint per request so
 * each stays all-or-nothing by itself, and one COMMIT, i.e. one fsync, for
 * the group. Conditional writes (UPDATE ... WHERE v = ? RETURNING) and the
 * claim (UPDATE ... WHERE id = (SELECT ... LIMIT 1)) are single statements,
 * and a later request of a group sees the effects of the earlier ones.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bus/error.h"
#include "bus/log.h"
#include "store_int.h"
#include "textbuf.h"

#define SQ_BUSY_MS 5000
#define SQ_CACHE 48
#define SQ_TLS 8
#define SQ_MAX_BINDS 96

typedef struct conn {
    sqlite3 *db;
    struct {
        char *sql;
        sqlite3_stmt *st;
    } cache[SQ_CACHE];
    unsigned next_evict;
    struct conn *next;
} conn_t;

typedef struct {
    char *path;
    int sync_full;
    uint64_t uid;
    pthread_mutex_t mu;
    conn_t *conns; /* every connection of this store, closed at close */
} sq_t;

static atomic_uint_fast64_t sq_uids = 1;
static __thread struct {
    uint64_t uid;
    conn_t *c;
} tls[SQ_TLS];
static __thread unsigned tls_rr;

/* ---- connections and statements ------------------------------------------ */

static int map_rc(int rc) {
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return BUS_ECONFLICT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
    case SQLITE_NOLFS:
        return BUS_EUNAVAILABLE;
    default:
        return BUS_EINTERNAL;
    }
}

static int fail(conn_t *c, int rc, const char *what) {
    int e = map_rc(rc);
    if (e != BUS_ECONFLICT) bus_error(NULL, "store sqlite: %s: %s", what, sqlite3_errmsg(c->db));
    return e;
}

static int conn_open(const sq_t *sq, sqlite3 **out, char *err, size_t errlen) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(sq->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, SQ_BUSY_MS);
        rc = sqlite3_exec(db, sq->sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", NULL, NULL,
                          NULL);
    }
    if (rc != SQLITE_OK) {
        if (err)
            snprintf(err, errlen, "BUS_STORE=sqlite:%s: cannot open: %s", sq->path,
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return BUS_EUNAVAILABLE;
    }
    *out = db;
    return 0;
}

/* This thread's connection to `sq`, opened on first use. */
static conn_t *conn_get(sq_t *sq) {
    for (int i = 0; i < SQ_TLS; i++)
        if (tls[i].uid == sq->uid) return tls[i].c;
    char err[512];
    sqlite3 *db;
    if (conn_open(sq, &db, err, sizeof err)) {
        bus_error(NULL, "store: %s", err);
        return NULL;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        sqlite3_close(db);
        return NULL;
    }
    c->db = db;
    pthread_mutex_lock(&sq->mu);
    c->next = sq->conns;
    sq->conns = c;
    pthread_mutex_unlock(&sq->mu);
    /* A free slot, else a stale or round-robin one; an evicted connection
     * stays on its store's list and is closed with the store. */
    int slot = -1;
    for (int i = 0; i < SQ_TLS && slot < 0; i++)
        if (tls[i].uid == 0) slot = i;
    if (slot < 0) slot = (int)(tls_rr++ % SQ_TLS);
    tls[slot].uid = sq->uid;
    tls[slot].c = c;
    return c;
}

static void conn_free(conn_t *c) {
    for (int i = 0; i < SQ_CACHE; i++) {
        free(c->cache[i].sql);
        sqlite3_finalize(c->cache[i].st);
    }
    sqlite3_close(c->db);
    free(c);
}

/* A prepared statement for `sql`, from this connection's small cache. The
 * caller resets it (stmt_done) after use. */
static sqlite3_stmt *stmt(conn_t *c, const char *sql) {
    for (int i = 0; i < SQ_CACHE; i++)
        if (c->cache[i].sql && strcmp(c->cache[i].sql, sql) == 0) return c->cache[i].st;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        bus_error(NULL, "store sqlite: prepare: %s: %s", sqlite3_errmsg(c->db), sql);
        return NULL;
    }
    int slot = -1;
    for (int i = 0; i < SQ_CACHE && slot < 0; i++)
        if (!c->cache[i].sql) slot = i;
    if (slot < 0) {
        slot = (int)(c->next_evict++ % SQ_CACHE);
        free(c->cache[slot].sql);
        sqlite3_finalize(c->cache[slot].st);
    }
    c->cache[slot].sql = strdup(sql);
    c->cache[slot].st = st;
    if (!c->cache[slot].sql) {
        sqlite3_finalize(st);
        c->cache[slot].st = NULL;
        return NULL;
    }
    return st;
}

static void stmt_done(sqlite3_stmt *st) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int exec_simple(conn_t *c, const char *sql) {
    sqlite3_stmt *st = stmt(c, sql);
    if (!st) return BUS_EINTERNAL;
    int rc = sqlite3_step(st);
    stmt_done(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : fail(c, rc, sql);
}

/* ---- SQL text building ----------------------------------------------------- */

typedef struct {
    char buf[4096];
    size_t len;
    int overflow;
    const cJSON *binds[SQ_MAX_BINDS]; /* values bound in order of the '?' */
    char as_json[SQ_MAX_BINDS];       /* 1: bind the value's JSON text (for json(?)) */
    int nbinds;
} sql_t;

static void put(sql_t *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sql_t *q, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(q->buf + q->len, sizeof q->buf - q->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof q->buf - q->len)
        q->overflow = 1;
    else
        q->len += (size_t)n;
}

static void bindv(sql_t *q, const cJSON *v) {
    if (q->nbinds == SQ_MAX_BINDS) {
        q->overflow = 1;
    } else {
        q->as_json[q->nbinds] = 0;
        q->binds[q->nbinds++] = v;
    }
}

static void bindj(sql_t *q, const cJSON *v) {
    bindv(q, v);
    if (!q->overflow) q->as_json[q->nbinds - 1] = 1;
}

/* The SQL expression of a field path (checked by store.c). */
static void expr(sql_t *q, const char *path) {
    if (strcmp(path, "_id") == 0)
        put(q, "id");
    else
        put(q, "json_extract(doc,'$.%s')", path);
}

static int bind_json(sqlite3_stmt *st, int i, const cJSON *v) {
    if (cJSON_IsString(v)) return sqlite3_bind_text(st, i, v->valuestring, -1, SQLITE_TRANSIENT);
    if (cJSON_IsBool(v)) return sqlite3_bind_int(st, i, cJSON_IsTrue(v));
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double)(int64_t)d)
            return sqlite3_bind_int64(st, i, (int64_t)d);
        return sqlite3_bind_double(st, i, d);
    }
    if (cJSON_IsNull(v) || !v) return sqlite3_bind_null(st, i);
    /* objects and arrays: their JSON text */
    char *t = cJSON_PrintUnformatted(v);
    if (!t) return SQLITE_NOMEM;
    int rc = sqlite3_bind_text(st, i, t, -1, SQLITE_TRANSIENT);
    cJSON_free(t);
    return rc;
}

/* "AND ..." conditions of a filter (checked by store.c). */
static void where(sql_t *q, const cJSON *w) {
    for (const cJSON *c = w ? w->child : NULL; c; c = c->next) {
        put(q, " AND ");
        if (cJSON_IsNull(c)) {
            expr(q, c->string);
            put(q, " IS NULL");
        } else if (!cJSON_IsObject(c)) {
            expr(q, c->string);
            put(q, "=?");
            bindv(q, c);
        } else {
            put(q, "(1");
            for (const cJSON *op = c->child; op; op = op->next) {
                put(q, " AND ");
                if (strcmp(op->string, "$ne") == 0) {
                    if (cJSON_IsNull(op)) {
                        expr(q, c->string);
                        put(q, " IS NOT NULL");
                    } else {
                        /* like MongoDB, $ne also matches a missing field */
                        put(q, "(");
                        expr(q, c->string);
                        put(q, " IS NULL OR ");
                        expr(q, c->string);
                        put(q, "<>?)");
                        bindv(q, op);
                    }
                    continue;
                }
                const char *sym = strcmp(op->string, "$lt") == 0    ? "<"
                                  : strcmp(op->string, "$lte") == 0 ? "<="
                                  : strcmp(op->string, "$gt") == 0  ? ">"
                                                                    : ">=";
                /* no comparison across types, as in MongoDB */
                put(q, "typeof(");
                expr(q, c->string);
                put(q, ")%s AND ", cJSON_IsString(op) ? "='text'" : " IN ('integer','real')");
                expr(q, c->string);
                put(q, "%s?", sym);
                bindv(q, op);
            }
            put(q, ")");
        }
    }
}

/* "json_remove(json_set(doc,'$.a',json(?)),'$.b')" for a patch. */
static void patch_expr(sql_t *q, const cJSON *patch) {
    int sets = 0, rems = 0;
    for (const cJSON *c = patch->child; c; c = c->next) {
        if (cJSON_IsNull(c))
            rems++;
        else
            sets++;
    }
    if (rems) put(q, "json_remove(");
    if (sets) put(q, "json_set(");
    put(q, "doc");
    if (sets)
        for (const cJSON *c = patch->child; c; c = c->next)
            if (!cJSON_IsNull(c)) {
                put(q, ",'$.%s',json(?)", c->string);
                bindj(q, c);
            }
    if (sets) put(q, ")");
    if (rems) {
        for (const cJSON *c = patch->child; c; c = c->next)
            if (cJSON_IsNull(c)) put(q, ",'$.%s'", c->string);
        put(q, ")");
    }
}

/* Prepares q and binds its values; the patch values (json(?)) as JSON text. */
static sqlite3_stmt *prepare_q(conn_t *c, sql_t *q, int *err) {
    *err = 0;
    if (q->overflow) {
        *err = BUS_EBAD_REQUEST;
        return NULL;
    }
    sqlite3_stmt *st = stmt(c, q->buf);
    if (!st) {
        *err = BUS_EINTERNAL;
        return NULL;
    }
    for (int i = 0; i < q->nbinds; i++) {
        int rc;
        if (q->as_json[i]) {
            char *t = cJSON_PrintUnformatted(q->binds[i]);
            rc = t ? sqlite3_bind_text(st, i + 1, t, -1, SQLITE_TRANSIENT) : SQLITE_NOMEM;
            cJSON_free(t);
        } else {
            rc = bind_json(st, i + 1, q->binds[i]);
        }
        if (rc != SQLITE_OK) {
            stmt_done(st);
            *err = fail(c, rc, "bind");
            return NULL;
        }
    }
    return st;
}

/* ---- documents ------------------------------------------------------------ */

/* Results leave this thread as JSON text (r->out_text); store.c parses it
 * on the loop thread. Parsing here would allocate every node in this
 * thread's malloc arena and free them all on the loop thread, and such
 * cross-thread frees contend for the arena's lock (it was a quarter of a
 * worker's CPU on a store-heavy RPC).
 *
 * Appends {"_id":..,"_v":..,<the stored body's members>}. 0 or -1. */
static int text_doc(bus__text_t *t, const char *id, int64_t v, const char *body, int n) {
    if (!id || !body || n < 2 || body[0] != '{') return -1;
    char num[32];
    bus__text_put(t, "{\"_id\":", 7);
    bus__text_json_str(t, id);
    bus__text_put(t, num, (size_t)snprintf(num, sizeof num, ",\"_v\":%lld", (long long)v));
    int i = 1;
    while (i < n && (body[i] == ' ' || body[i] == '\n' || body[i] == '\t' || body[i] == '\r')) i++;
    if (body[i] != '}') bus__text_put(t, ",", 1);
    bus__text_put(t, body + i, (size_t)(n - i));
    return t->oom ? -1 : 0;
}

static int text_row(bus__text_t *t, sqlite3_stmt *st, int id_col, int v_col, int doc_col) {
    return text_doc(t, (const char *)sqlite3_column_text(st, id_col), sqlite3_column_int64(st, v_col),
                    (const char *)sqlite3_column_text(st, doc_col), sqlite3_column_bytes(st, doc_col));
}

static char *doc_text(const cJSON *doc) { return cJSON_PrintUnformatted(doc); }

/* ENOT_FOUND or ECONFLICT after a conditional write touched no row. */
static int why_not(conn_t *c, const char *coll, const char *id) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT 1 FROM \"c_%s\" WHERE id=?", coll);
    sqlite3_stmt *st = stmt(c, sql);
    if (!st) return BUS_EINTERNAL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    stmt_done(st);
    if (rc == SQLITE_ROW) return BUS_ECONFLICT;
    if (rc == SQLITE_DONE) return BUS_ENOT_FOUND;
    return fail(c, rc, "select");
}

/* ---- operations (each runs inside or outside a transaction) ---------------- */

static int op_get(conn_t *c, const char *coll, const char *id, char **out) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT id,v,doc FROM \"c_%s\" WHERE id=?", coll);
    sqlite3_stmt *st = stmt(c, sql);
    if (!st) return BUS_EINTERNAL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st), e = 0;
    if (rc == SQLITE_ROW) {
        bus__text_t t = {0};
        if (text_row(&t, st, 0, 1, 2) == 0) *out = t.buf;
        else free(t.buf), e = BUS_EINTERNAL;
    } else {
        e = rc == SQLITE_DONE ? BUS_ENOT_FOUND : fail(c, rc, "get");
    }
    stmt_done(st);
    return e;
}

static int op_insert(conn_t *c, const char *coll, const char *id, const cJSON *body, int64_t *v) {
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO \"c_%s\"(id,v,doc) VALUES(?,1,?)", coll);
    sqlite3_stmt *st = stmt(c, sql);
    char *txt = doc_text(body);
    if (!st || !txt) {
        cJSON_free(txt);
        return BUS_EINTERNAL;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, txt, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int e = rc == SQLITE_DONE ? 0 : fail(c, rc, "insert");
    stmt_done(st);
    cJSON_free(txt);
    *v = 1;
    return e;
}

/* REPLACE (patch = 0, body is the document) or UPDATE (patch = 1). */
static int op_write(conn_t *c, const char *coll, const char *id, int64_t version, const cJSON *body, int patch,
                    int64_t *newv, char **out) {
    sql_t q = {.len = 0};
    char *txt = NULL;
    put(&q, "UPDATE \"c_%s\" SET v=v+1,doc=", coll);
    if (patch) {
        patch_expr(&q, body);
    } else {
        put(&q, "?");
        txt = doc_text(body);
        if (!txt) return BUS_EINTERNAL;
    }
    put(&q, " WHERE id=? AND (?<0 OR v=?) RETURNING v%s", out ? ",doc" : "");
    int e;
    sqlite3_stmt *st = prepare_q(c, &q, &e);
    if (!st) {
        cJSON_free(txt);
        return e;
    }
    int i = q.nbinds;
    if (txt) sqlite3_bind_text(st, ++i, txt, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, ++i, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, ++i, version);
    sqlite3_bind_int64(st, ++i, version);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *newv = sqlite3_column_int64(st, 0);
        e = 0;
        if (out) {
            bus__text_t t = {0};
            if (text_doc(&t, id, *newv, (const char *)sqlite3_column_text(st, 1), sqlite3_column_bytes(st, 1)) == 0)
                *out = t.buf;
            else
                free(t.buf), e = BUS_EINTERNAL;
        }
        rc = sqlite3_step(st); /* finish the statement */
        stmt_done(st);
    } else if (rc == SQLITE_DONE) {
        stmt_done(st);
        e = why_not(c, coll, id);
    } else {
        e = fail(c, rc, "update");
        stmt_done(st);
    }
    cJSON_free(txt);
    return e;
}

static int op_delete(conn_t *c, const char *coll, const char *id, int64_t version) {
    char sql[160];
    snprintf(sql, sizeof sql, "DELETE FROM \"c_%s\" WHERE id=? AND (?2<0 OR v=?2)", coll);
    sqlite3_stmt *st = stmt(c, sql);
    if (!st) return BUS_EINTERNAL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, version);
    int rc = sqlite3_step(st);
    stmt_done(st);
    if (rc != SQLITE_DONE) return fail(c, rc, "delete");
    return sqlite3_changes(c->db) ? 0 : why_not(c, coll, id);
}

static int op_mark(conn_t *c, const char *scope, const char *id, const cJSON *result) {
    sqlite3_stmt *st = stmt(c, "INSERT INTO _bus_processed(scope,id,result,at) VALUES(?,?,?,?)");
    char *txt = cJSON_PrintUnformatted(result);
    if (!st || !txt) {
        cJSON_free(txt);
        return BUS_EINTERNAL;
    }
    sqlite3_bind_text(st, 1, scope, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, txt, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, bus__store_now_ms());
    int rc = sqlite3_step(st);
    stmt_done(st);
    cJSON_free(txt);
    return rc == SQLITE_DONE ? 0 : fail(c, rc, "mark");
}

static int op_pget(conn_t *c, const char *scope, const char *id, char **out) {
    sqlite3_stmt *st = stmt(c, "SELECT result FROM _bus_processed WHERE scope=? AND id=?");
    if (!st) return BUS_EINTERNAL;
    sqlite3_bind_text(st, 1, scope, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st), e = 0;
    if (rc == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        *out = t ? strdup(t) : NULL;
        if (!*out) e = BUS_EINTERNAL;
    } else {
        e = rc == SQLITE_DONE ? BUS_ENOT_FOUND : fail(c, rc, "processed get");
    }
    stmt_done(st);
    return e;
}

static void order_by(sql_t *q, const char *sort, int desc) {
    put(q, " ORDER BY ");
    if (sort) {
        expr(q, sort);
        put(q, desc ? " DESC," : " ASC,");
    }
    put(q, desc ? " id DESC" : " id ASC");
}

static int op_find(conn_t *c, bus__sreq_t *r) {
    int desc = r->sort && r->sort[0] == '-';
    const char *sort = r->sort ? r->sort + desc : NULL;
    cJSON *cval = NULL;
    char *cid = NULL;
    if (r->cursor) {
        int e = bus__store_cursor_decode(r->cursor, &cval, &cid);
        if (e) return e;
    }
    sql_t q = {.len = 0};
    put(&q, "SELECT id,v,doc");
    if (sort) {
        put(&q, ",");
        expr(&q, sort);
    }
    put(&q, " FROM \"c_%s\" WHERE 1", r->coll);
    where(&q, r->where);
    cJSON *idv = cid ? cJSON_CreateString(cid) : NULL;
    if (cid) {
        /* keyset: strictly after (value, id) in the sort order; NULLs sort first */
        if (!sort) {
            put(&q, desc ? " AND id<?" : " AND id>?");
            bindv(&q, idv);
        } else if (cJSON_IsNull(cval)) {
            put(&q, " AND (");
            expr(&q, sort);
            put(&q, desc ? " IS NULL AND id<?)" : " IS NOT NULL OR id>?)");
            bindv(&q, idv);
        } else {
            put(&q, " AND (");
            expr(&q, sort);
            put(&q, desc ? "<? OR " : ">? OR ");
            bindv(&q, cval);
            if (desc) {
                expr(&q, sort);
                put(&q, " IS NULL OR ");
            }
            put(&q, "(");
            expr(&q, sort);
            put(&q, "=? AND id%s?))", desc ? "<" : ">");
            bindv(&q, cval);
            bindv(&q, idv);
        }
    }
    order_by(&q, sort, desc);
    put(&q, " LIMIT %d", r->limit + 1);
    int e;
    sqlite3_stmt *st = prepare_q(c, &q, &e);
    if (st) {
        cJSON *lastv = NULL;
        bus__text_t arr = {0};
        char *last_id = NULL;
        bus__text_put(&arr, "[", 1);
        int n = 0, rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (n == r->limit) {
                /* one more row exists: the cursor points at the last returned one */
                r->next_cursor = last_id ? bus__store_cursor_encode(lastv, last_id) : NULL;
                if (!r->next_cursor) rc = SQLITE_NOMEM;
                break;
            }
            if (sort && n == r->limit - 1) {
                switch (sqlite3_column_type(st, 3)) {
                case SQLITE_INTEGER:
                    lastv = cJSON_CreateNumber((double)sqlite3_column_int64(st, 3));
                    break;
                case SQLITE_FLOAT:
                    lastv = cJSON_CreateNumber(sqlite3_column_double(st, 3));
                    break;
                case SQLITE_TEXT:
                    lastv = cJSON_CreateString((const char *)sqlite3_column_text(st, 3));
                    break;
                default:
                    lastv = NULL;
                }
            }
            if (n) bus__text_put(&arr, ",", 1);
            if (text_row(&arr, st, 0, 1, 2) != 0) {
                rc = SQLITE_CORRUPT;
                break;
            }
            if (n == r->limit - 1) last_id = strdup((const char *)sqlite3_column_text(st, 0)); /* for the cursor */
            n++;
        }
        bus__text_put(&arr, "]", 1);
        cJSON_Delete(lastv);
        free(last_id);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            e = fail(c, rc, "find");
            free(arr.buf);
        } else if (arr.oom) {
            e = BUS_EINTERNAL;
            free(arr.buf);
        } else {
            r->out_text = arr.buf;
        }
        stmt_done(st);
    }
    cJSON_Delete(cval);
    cJSON_Delete(idv);
    free(cid);
    return e;
}

static int op_count(conn_t *c, bus__sreq_t *r) {
    sql_t q = {.len = 0};
    put(&q, "SELECT count(*) FROM \"c_%s\" WHERE 1", r->coll);
    where(&q, r->where);
    int e;
    sqlite3_stmt *st = prepare_q(c, &q, &e);
    if (!st) return e;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        r->count = sqlite3_column_int64(st, 0);
    else
        e = fail(c, rc, "count");
    stmt_done(st);
    return e;
}

static int op_foau(conn_t *c, bus__sreq_t *r) {
    int desc = r->sort && r->sort[0] == '-';
    const char *sort = r->sort ? r->sort + desc : NULL;
    sql_t q = {.len = 0};
    put(&q, "UPDATE \"c_%s\" SET v=v+1,doc=", r->coll);
    patch_expr(&q, r->doc);
    put(&q, " WHERE id=(SELECT id FROM \"c_%s\" WHERE 1", r->coll);
    where(&q, r->where);
    order_by(&q, sort, desc);
    put(&q, " LIMIT 1) RETURNING id,v,doc");
    int e;
    sqlite3_stmt *st = prepare_q(c, &q, &e);
    if (!st) return e;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        bus__text_t t = {0};
        e = text_row(&t, st, 0, 1, 2) == 0 ? 0 : BUS_EINTERNAL;
        if (e) free(t.buf);
        else r->out_text = t.buf;
        sqlite3_step(st);
    } else {
        e = rc == SQLITE_DONE ? BUS_ENOT_FOUND : fail(c, rc, "find_one_and_update");
    }
    stmt_done(st);
    return e;
}

/* The operations of one atomic batch; runs inside the group's transaction
 * and savepoint (sq_exec_group), which undo it all when one fails. */
static int op_batch(conn_t *c, bus__sreq_t *r) {
    int e = 0;
    for (size_t i = 0; i < r->nops && !e; i++) {
        bus__sop_t *o = &r->ops[i];
        switch (o->kind) {
        case BUS_STORE_OP_INSERT:
            e = op_insert(c, o->coll, o->id, o->doc, &r->versions[i]);
            break;
        case BUS_STORE_OP_REPLACE:
        case BUS_STORE_OP_UPDATE:
            e = op_write(c, o->coll, o->id, o->version, o->doc, o->kind == BUS_STORE_OP_UPDATE, &r->versions[i],
                         NULL);
            break;
        case BUS_STORE_OP_DELETE:
            e = op_delete(c, o->coll, o->id, o->version);
            break;
        case BUS_STORE_OP_MARK:
            e = op_mark(c, o->coll, o->id, o->doc);
            break;
        }
        if (e) r->failed = (long)i;
    }
    return e;
}

static int op_prune(conn_t *c, bus__sreq_t *r) {
    sqlite3_stmt *st = stmt(c, "DELETE FROM _bus_processed WHERE at<?");
    if (!st) return BUS_EINTERNAL;
    sqlite3_bind_int64(st, 1, r->version);
    int rc = sqlite3_step(st);
    stmt_done(st);
    if (rc != SQLITE_DONE) return fail(c, rc, "prune");
    r->count = sqlite3_changes(c->db);
    return 0;
}

/* Runs one request on c, setting its status and outputs. */
static void run(conn_t *c, bus__sreq_t *r) {
    int64_t v = 0;
    switch (r->kind) {
    case BUS__SREQ_GET:
        r->status = op_get(c, r->coll, r->id, &r->out_text);
        break;
    case BUS__SREQ_INSERT:
        r->status = op_insert(c, r->coll, r->id, r->doc, &v); /* store.c builds the result from r->doc */
        break;
    case BUS__SREQ_REPLACE:
    case BUS__SREQ_UPDATE:
        r->status =
            op_write(c, r->coll, r->id, r->version, r->doc, r->kind == BUS__SREQ_UPDATE, &v, &r->out_text);
        break;
    case BUS__SREQ_DELETE:
        r->status = op_delete(c, r->coll, r->id, r->version);
        break;
    case BUS__SREQ_FIND:
        r->status = op_find(c, r);
        break;
    case BUS__SREQ_COUNT:
        r->status = op_count(c, r);
        break;
    case BUS__SREQ_FOAU:
        r->status = op_foau(c, r);
        break;
    case BUS__SREQ_BATCH:
        r->status = op_batch(c, r);
        break;
    case BUS__SREQ_PGET:
        r->status = op_pget(c, r->coll, r->id, &r->out_text);
        break;
    case BUS__SREQ_PRUNE:
        r->status = op_prune(c, r);
        break;
    case BUS__SREQ_PING:
        r->status = exec_simple(c, "SELECT count(*) FROM _bus_processed WHERE 0");
        break;
    }
}

/* Reads run here, on the reader threads, in parallel with the writer
 * (store.c hands every write to sq_exec_group). */
static void sq_exec(void *impl, bus__sreq_t *r) {
    conn_t *c = conn_get(impl);
    if (!c) {
        r->status = BUS_EUNAVAILABLE;
        return;
    }
    run(c, r);
}

/* Reads taken together run in one read transaction: one snapshot and one
 * round of WAL locking (fcntl calls on the -shm file) for all of them rather
 * than one per read. Each still sees everything committed before it began. */
static void sq_exec_reads(void *impl, bus__sreq_t **reqs, size_t n) {
    conn_t *c = conn_get(impl);
    if (!c) {
        for (size_t i = 0; i < n; i++) reqs[i]->status = BUS_EUNAVAILABLE;
        return;
    }
    int in_txn = exec_simple(c, "BEGIN") == 0;
    for (size_t i = 0; i < n; i++) run(c, reqs[i]);
    if (in_txn && !sqlite3_get_autocommit(c->db)) exec_simple(c, "COMMIT");
}

/* Fails every request of the group that has not failed by itself. */
static void group_fail(bus__sreq_t **reqs, size_t n, int e) {
    for (size_t i = 0; i < n; i++)
        if (reqs[i]->status == 0) {
            reqs[i]->status = e;
            reqs[i]->failed = -1;
        }
}

/* Group commit: one BEGIN IMMEDIATE ... COMMIT (one WAL fsync at
 * synchronous=FULL) for all the requests; each runs in a savepoint, so a
 * request that fails (a version conflict, a duplicate id) is undone alone.
 * When the commit fails, none is stored and all report the error. */
static void sq_exec_group(void *impl, bus__sreq_t **reqs, size_t n) {
    conn_t *c = conn_get(impl);
    int e = c ? exec_simple(c, "BEGIN IMMEDIATE") : BUS_EUNAVAILABLE;
    if (e) {
        group_fail(reqs, n, e);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        bus__sreq_t *r = reqs[i];
        if ((e = exec_simple(c, "SAVEPOINT w"))) {
            r->status = e;
            continue;
        }
        run(c, r);
        if (r->status) exec_simple(c, "ROLLBACK TO w");
        if (sqlite3_get_autocommit(c->db)) {
            /* An I/O error or a full disk ended the whole transaction: the
             * earlier requests are gone with it, and the later ones must not
             * run outside a transaction. */
            int why = r->status ? r->status : BUS_EUNAVAILABLE;
            for (size_t j = i + 1; j < n; j++) reqs[j]->status = why;
            group_fail(reqs, i + 1, why);
            return;
        }
        exec_simple(c, "RELEASE w");
    }
    e = exec_simple(c, "COMMIT");
    if (e) {
        if (!sqlite3_get_autocommit(c->db)) exec_simple(c, "ROLLBACK");
        group_fail(reqs, n, e);
    }
}

/* ---- open / declare / close ----------------------------------------------- */

static int sq_declare(void *impl, const char *coll, const char *const *idx, const char *const *uniq, char *err,
                      size_t errlen) {
    sq_t *sq = impl;
    conn_t *c = conn_get(sq);
    if (!c) {
        if (err) snprintf(err, errlen, "BUS_STORE=sqlite:%s: cannot open", sq->path);
        return BUS_EUNAVAILABLE;
    }
    char sql[9000];
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS \"c_%s\"(id TEXT PRIMARY KEY NOT NULL,v INTEGER NOT NULL,doc TEXT NOT NULL)"
             " WITHOUT ROWID",
             coll);
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    for (int u = 0; u < 2 && rc == SQLITE_OK; u++) {
        const char *const *l = u ? uniq : idx;
        for (size_t i = 0; l && l[i] && rc == SQLITE_OK; i++) {
            sql_t name = {.len = 0}, cols = {.len = 0};
            char buf[1100], *save = NULL;
            snprintf(buf, sizeof buf, "%s", l[i]);
            put(&name, "%s_%s", u ? "ux" : "ix", coll);
            int first = 1;
            for (char *f = strtok_r(buf, ",", &save); f; f = strtok_r(NULL, ",", &save), first = 0) {
                put(&name, "__");
                for (char *p = f; *p; p++) put(&name, "%c", *p == '.' ? '_' : *p);
                if (!first) put(&cols, ",");
                expr(&cols, f);
            }
            snprintf(sql, sizeof sql, "CREATE %sINDEX IF NOT EXISTS \"%s\" ON \"c_%s\"(%s)", u ? "UNIQUE " : "",
                     name.buf, coll, cols.buf);
            rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
        }
    }
    if (rc != SQLITE_OK) {
        if (err) snprintf(err, errlen, "BUS_STORE=sqlite:%s: declaring %s: %s", sq->path, coll, msg ? msg : "?");
        sqlite3_free(msg);
        return map_rc(rc) == BUS_ECONFLICT ? BUS_ECONFLICT : map_rc(rc);
    }
    return 0;
}

static void sq_close(void *impl) {
    sq_t *sq = impl;
    conn_t *c = sq->conns;
    while (c) {
        conn_t *n = c->next;
        conn_free(c);
        c = n;
    }
    for (int i = 0; i < SQ_TLS; i++)
        if (tls[i].uid == sq->uid) tls[i].uid = 0;
    pthread_mutex_destroy(&sq->mu);
    free(sq->path);
    free(sq);
}

int bus__store_sqlite_open(const char *spec, void **impl, char *err, size_t errlen) {
    sq_t *sq = calloc(1, sizeof *sq);
    if (!sq) return BUS_EINTERNAL;
    sq->sync_full = 1;
    sq->path = strdup(spec);
    if (!sq->path) {
        free(sq);
        return BUS_EINTERNAL;
    }
    char *qm = strchr(sq->path, '?');
    if (qm) {
        *qm = 0;
        if (strcmp(qm + 1, "sync=normal") == 0)
            sq->sync_full = 0;
        else if (strcmp(qm + 1, "sync=full") != 0) {
            if (err) snprintf(err, errlen, "BUS_STORE=sqlite:%s: unknown option \"%s\" (sync=full|normal)", spec, qm + 1);
            free(sq->path);
            free(sq);
            return BUS_EBAD_REQUEST;
        }
    }
    if (!*sq->path) {
        if (err) snprintf(err, errlen, "BUS_STORE=sqlite:: empty path");
        free(sq->path);
        free(sq);
        return BUS_EBAD_REQUEST;
    }
    /* The default sqlite:var/bus.db must work in a fresh checkout: create the
     * file's directory (one level) when it is missing. */
    char *slash = strrchr(sq->path, '/');
    if (slash && slash != sq->path) {
        *slash = '\0';
        mkdir(sq->path, 0755); /* an error shows when the file is opened */
        *slash = '/';
    }
    sq->uid = atomic_fetch_add(&sq_uids, 1);
    pthread_mutex_init(&sq->mu, NULL);
    /* Open once here to report a bad path at start, switch the file to WAL
     * (persistent) and create the markers table; proves the file writable. */
    sqlite3 *db;
    int rc = conn_open(sq, &db, err, errlen);
    if (rc) {
        sq_close(sq);
        return rc;
    }
    char *msg = NULL;
    int src = sqlite3_exec(db,
                           "PRAGMA journal_mode=WAL;"
                           "CREATE TABLE IF NOT EXISTS _bus_processed(scope TEXT NOT NULL,id TEXT NOT NULL,"
                           "result TEXT,at INTEGER NOT NULL,PRIMARY KEY(scope,id)) WITHOUT ROWID;"
                           "CREATE INDEX IF NOT EXISTS _bus_processed_at ON _bus_processed(at);",
                           NULL, NULL, &msg);
    if (src != SQLITE_OK) {
        if (err) snprintf(err, errlen, "BUS_STORE=sqlite:%s: cannot initialise: %s", sq->path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(db);
        sq_close(sq);
        return BUS_EUNAVAILABLE;
    }
    sqlite3_close(db);
    *impl = sq;
    return 0;
}

const bus__store_backend_t bus__store_sqlite_backend = {
    .name = "sqlite",
    .declare = sq_declare,
    .exec = sq_exec,
    .exec_group = sq_exec_group,
    .exec_reads = sq_exec_reads,
    .close = sq_close,
};
