/* The store's contract suite: the same tests against every backend.
 *
 * SQLite always (files under $BUS_TEST_TMPDIR or a mkdtemp dir); MongoDB
 * when BUS_TEST_MONGO_URI is set (each test uses its own collection names),
 * else every *_mongodb test is skipped (SKIP: counted as skipped, not passed).
 */
#include <stdint.h>
#include <sys/stat.h>
#include <uv.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/store.h"
#include "../test.h"

/* ---- harness ----------------------------------------------------------- */

static uv_loop_t *loop;
static char url[1024];
static char sfx[32]; /* collection suffix, unique per test process */

typedef struct {
    int done, status;
    cJSON *doc; /* copy */
    char *cursor;
    int64_t count;
    long failed;
    int64_t versions[8];
    int nops; /* batch: how many versions to copy (at most 8) */
} res_t;

static void doc_cb(int st, const cJSON *d, void *data) {
    res_t *r = data;
    r->done = 1;
    r->status = st;
    r->doc = d ? cJSON_Duplicate(d, 1) : NULL;
}
static void status_cb(int st, void *data) {
    res_t *r = data;
    r->done = 1;
    r->status = st;
}
static void find_cb(int st, const cJSON *docs, const char *next, void *data) {
    res_t *r = data;
    r->done = 1;
    r->status = st;
    r->doc = docs ? cJSON_Duplicate(docs, 1) : NULL;
    r->cursor = next ? strdup(next) : NULL;
}
static void count_cb(int st, int64_t n, void *data) {
    res_t *r = data;
    r->done = 1;
    r->status = st;
    r->count = n;
}
static void batch_cb(int st, long failed, const int64_t *v, void *data) {
    res_t *r = data;
    r->done = 1;
    r->status = st;
    r->failed = failed;
    for (int i = 0; v && i < r->nops && i < 8; i++) r->versions[i] = v[i];
    if (!v) CHECK(st != 0);
}

static void wait_for(res_t *r) {
    while (!r->done) uv_run(loop, UV_RUN_ONCE);
}
static void res_clear(res_t *r) {
    cJSON_Delete(r->doc);
    free(r->cursor);
    memset(r, 0, sizeof *r);
}

/* One temp dir for the whole run, made by the parent process before the
 * tests fork and removed when it exits. */
static char tmp_dir[512];
static pid_t tmp_owner;
__attribute__((constructor)) static void tmp_make(void) {
    tmp_owner = getpid();
    const char *base = getenv("BUS_TEST_TMPDIR");
    if (base && *base) {
        mkdir(base, 0700);
        snprintf(tmp_dir, sizeof tmp_dir, "%s/store.XXXXXX", base);
    } else {
        snprintf(tmp_dir, sizeof tmp_dir, "/tmp/bus-store.XXXXXX");
    }
    if (!mkdtemp(tmp_dir)) tmp_dir[0] = 0;
}
__attribute__((destructor)) static void tmp_remove(void) {
    char cmd[600];
    if (!tmp_dir[0] || getenv("BUS_TEST_KEEP") || getpid() != tmp_owner) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
}
static const char *tmpdir(void) {
    CHECK(tmp_dir[0] != 0);
    return tmp_dir;
}

/* Sets `url` for the backend; skips the test when it is not available. */
static void use_backend(const char *backend) {
    loop = uv_default_loop();
    snprintf(sfx, sizeof sfx, "_%ld_%ld", (long)getpid(), (long)time(NULL) % 100000);
    if (strcmp(backend, "sqlite") == 0) {
        snprintf(url, sizeof url, "sqlite:%s/t%s.db", tmpdir(), sfx);
        return;
    }
    const char *m = getenv("BUS_TEST_MONGO_URI");
    if (!m || !*m) SKIP("BUS_TEST_MONGO_URI is not set (no MongoDB to run the store's contract against)");
    snprintf(url, sizeof url, "%s", m);
}

static const char *C(const char *name) {
    static char buf[8][96];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s%s", name, sfx);
    return buf[i];
}

static bus_store_t *open_store(void) {
    bus_store_t *s = NULL;
    char err[512];
    int rc = bus_store_open(loop, url, &s, err, sizeof err);
    if (rc) fprintf(stderr, "  open %s: %s\n", url, err);
    CHECK_INT(rc, 0);
    return s;
}

static void declare(bus_store_t *s, const char *coll, const char *const *idx, const char *const *uniq) {
    char err[512];
    int rc = bus_store_declare(s, coll, idx, uniq, err, sizeof err);
    if (rc) fprintf(stderr, "  declare: %s\n", err);
    CHECK_INT(rc, 0);
}

static void close_store(bus_store_t *s) {
    bus_store_close(s, NULL, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
}

static cJSON *J(const char *txt) {
    cJSON *j = cJSON_Parse(txt);
    CHECK(j != NULL);
    return j;
}

static int insert(bus_store_t *s, const char *coll, const char *id, const char *json, cJSON **out) {
    res_t r = {0};
    cJSON *d = J(json);
    CHECK_INT(bus_store_insert(s, coll, id, d, doc_cb, &r), 0);
    cJSON_Delete(d); /* the store copied it */
    wait_for(&r);
    if (out)
        *out = r.doc;
    else
        cJSON_Delete(r.doc);
    return r.status;
}

static int get(bus_store_t *s, const char *coll, const char *id, cJSON **out) {
    res_t r = {0};
    CHECK_INT(bus_store_get(s, coll, id, doc_cb, &r), 0);
    wait_for(&r);
    if (out)
        *out = r.doc;
    else
        cJSON_Delete(r.doc);
    return r.status;
}

static int64_t vof(const cJSON *d) { return (int64_t)cJSON_GetObjectItem(d, "_v")->valuedouble; }
static const char *sof(const cJSON *d, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(d, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- contract tests, each taking the backend name --------------------- */

static void t_crud(const char *be) {
    use_backend(be);
    bus_store_t *s = open_store();
    const char *coll = C("players");
    declare(s, coll, NULL, NULL);
    cJSON *d = NULL;
    CHECK_INT(insert(s, coll, "p1", "{\"name\":\"Ann\",\"level\":30,\"_v\":99,\"tags\":[\"a\"]}", &d), 0);
    CHECK_STR(sof(d, "_id"), "p1");
    CHECK_INT(vof(d), 1);
    cJSON_Delete(d);
    CHECK_INT(insert(s, coll, "p1", "{\"name\":\"dup\"}", NULL), BUS_ECONFLICT);
    /* an id that needs JSON escaping, and an empty body, come back as stored */
    const char *odd = "we\"ird\\id\n\x01 \xc3\xa9";
    CHECK_INT(insert(s, coll, odd, "{}", NULL), 0);
    CHECK_INT(get(s, coll, odd, &d), 0);
    CHECK_STR(sof(d, "_id"), odd);
    CHECK_INT(cJSON_GetArraySize(d), 2); /* _id and _v only */
    cJSON_Delete(d);

    CHECK_INT(get(s, coll, "p1", &d), 0);
    CHECK_STR(sof(d, "name"), "Ann");
    CHECK_INT(cJSON_GetObjectItem(d, "level")->valueint, 30);
    CHECK_INT(vof(d), 1);
    CHECK_INT(get(s, coll, "nope", NULL), BUS_ENOT_FOUND);

    /* replace a read document as is, with its version */
    res_t r = {0};
    cJSON_ReplaceItemInObject(d, "name", cJSON_CreateString("Anna"));
    CHECK_INT(bus_store_replace(s, coll, "p1", vof(d), d, doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(vof(r.doc), 2);
    CHECK_STR(sof(r.doc, "name"), "Anna");
    res_clear(&r);
    /* the same stale version again: conflict */
    CHECK_INT(bus_store_replace(s, coll, "p1", 1, d, doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ECONFLICT);
    CHECK(r.doc == NULL);
    res_clear(&r);
    CHECK_INT(bus_store_replace(s, coll, "ghost", 1, d, doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ENOT_FOUND);
    res_clear(&r);
    cJSON_Delete(d);

    /* update: set one field (an object replaces the whole value), remove one */
    cJSON *patch = J("{\"level\":31,\"tags\":null,\"profile\":{\"lang\":\"de\"}}");
    CHECK_INT(bus_store_update(s, coll, "p1", 2, patch, doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(vof(r.doc), 3);
    CHECK_INT(cJSON_GetObjectItem(r.doc, "level")->valueint, 31);
    CHECK(cJSON_GetObjectItem(r.doc, "tags") == NULL);
    CHECK_STR(sof(cJSON_GetObjectItem(r.doc, "profile"), "lang"), "de");
    CHECK_STR(sof(r.doc, "name"), "Anna");
    res_clear(&r);
    CHECK_INT(bus_store_update(s, coll, "p1", 2, patch, doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ECONFLICT);
    res_clear(&r);
    CHECK_INT(bus_store_update(s, coll, "p1", BUS_STORE_ANY_VERSION, patch, doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(vof(r.doc), 4);
    res_clear(&r);
    cJSON_Delete(patch);
    /* a patch may not touch reserved or dotted fields */
    patch = J("{\"a.b\":1}");
    CHECK_INT(bus_store_update(s, coll, "p1", 4, patch, doc_cb, &r), BUS_EBAD_REQUEST);
    cJSON_Delete(patch);

    CHECK_INT(get(s, coll, "p1", &d), 0);
    CHECK_INT(vof(d), 4);
    CHECK(cJSON_GetObjectItem(d, "tags") == NULL);
    cJSON_Delete(d);

    CHECK_INT(bus_store_delete(s, coll, "p1", 3, status_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ECONFLICT);
    res_clear(&r);
    CHECK_INT(bus_store_delete(s, coll, "p1", 4, status_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    res_clear(&r);
    CHECK_INT(bus_store_delete(s, coll, "p1", BUS_STORE_ANY_VERSION, status_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ENOT_FOUND);
    res_clear(&r);
    CHECK_INT(get(s, coll, "p1", NULL), BUS_ENOT_FOUND);
    CHECK_INT(bus_store_ping(s, status_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    res_clear(&r);
    /* argument errors are returned at once, and no callback follows */
    CHECK_INT(bus_store_get(s, C("undeclared"), "x", doc_cb, &r), BUS_EBAD_REQUEST);
    CHECK_INT(bus_store_get(s, coll, "", doc_cb, &r), BUS_EBAD_REQUEST);
    cJSON *arr = J("[1]");
    CHECK_INT(bus_store_insert(s, coll, "x", arr, doc_cb, &r), BUS_EBAD_REQUEST);
    cJSON_Delete(arr);
    close_store(s);
    CHECK_INT(r.done, 0);
}

static void t_unique(const char *be) {
    use_backend(be);
    bus_store_t *s = open_store();
    const char *coll = C("alliances");
    const char *idx[] = {"state", NULL};
    const char *uniq[] = {"state,name_key", "tag", NULL};
    declare(s, coll, idx, uniq);
    declare(s, coll, idx, uniq); /* again: harmless */
    CHECK_INT(insert(s, coll, "a1", "{\"state\":\"active\",\"name_key\":\"wolves\",\"tag\":\"WLF\"}", NULL), 0);
    CHECK_INT(insert(s, coll, "a2", "{\"state\":\"active\",\"name_key\":\"wolves\",\"tag\":\"WL2\"}", NULL),
              BUS_ECONFLICT);
    CHECK_INT(insert(s, coll, "a3", "{\"state\":\"dissolved\",\"name_key\":\"wolves\",\"tag\":\"WL3\"}", NULL), 0);
    CHECK_INT(insert(s, coll, "a4", "{\"state\":\"active\",\"name_key\":\"bears\",\"tag\":\"WLF\"}", NULL),
              BUS_ECONFLICT);
    /* documents without the fields are not constrained by the index */
    CHECK_INT(insert(s, coll, "a5", "{\"note\":\"no tag\"}", NULL), 0);
    CHECK_INT(insert(s, coll, "a6", "{\"note\":\"no tag either\"}", NULL), 0);
    /* an update that would collide */
    res_t r = {0};
    cJSON *p = J("{\"state\":\"active\"}");
    CHECK_INT(bus_store_update(s, coll, "a3", 1, p, doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ECONFLICT);
    res_clear(&r);
    cJSON_Delete(p);
    cJSON *d;
    CHECK_INT(get(s, coll, "a3", &d), 0);
    CHECK_STR(sof(d, "state"), "dissolved");
    CHECK_INT(vof(d), 1);
    cJSON_Delete(d);
    close_store(s);
}

/* Pages through `where` sorted by `sort`, `limit` per page; returns the ids
 * in order as a JSON array. Between pages calls `between(page)` if set. */
static cJSON *page_all(bus_store_t *s, const char *coll, const char *where, const char *sort, int limit,
                       void (*between)(bus_store_t *, int), int *pages) {
    cJSON *ids = cJSON_CreateArray();
    cJSON *w = where ? J(where) : NULL;
    char *cursor = NULL;
    int page = 0;
    do {
        res_t r = {0};
        bus_store_query_t q = {.where = w, .sort = sort, .limit = limit, .cursor = cursor};
        CHECK_INT(bus_store_find(s, coll, &q, find_cb, &r), 0);
        wait_for(&r);
        CHECK_INT(r.status, 0);
        CHECK(cJSON_GetArraySize(r.doc) <= limit);
        cJSON *it;
        cJSON_ArrayForEach(it, r.doc) cJSON_AddItemToArray(ids, cJSON_CreateString(sof(it, "_id")));
        free(cursor);
        cursor = r.cursor;
        r.cursor = NULL;
        res_clear(&r);
        page++;
        if (cursor && between) between(s, page);
        CHECK(page < 1000);
    } while (cursor);
    cJSON_Delete(w);
    if (pages) *pages = page;
    return ids;
}

static const char *g_coll;
static void mutate_between(bus_store_t *s, int page) {
    /* insert a document sorting before the cursor and one after; delete one
     * not yet seen: pagination stays stable */
    char id[32];
    if (page == 1) {
        snprintf(id, sizeof id, "late_low");
        CHECK_INT(insert(s, g_coll, id, "{\"state\":\"open\",\"score\":1000}", NULL), 0);
        snprintf(id, sizeof id, "late_high");
        CHECK_INT(insert(s, g_coll, id, "{\"state\":\"open\",\"score\":-5}", NULL), 0);
        res_t r = {0};
        CHECK_INT(bus_store_delete(s, g_coll, "d03", BUS_STORE_ANY_VERSION, status_cb, &r), 0);
        wait_for(&r);
        CHECK_INT(r.status, 0);
    }
}

static void t_find(const char *be) {
    use_backend(be);
    bus_store_t *s = open_store();
    const char *coll = g_coll = C("members");
    const char *idx[] = {"state", "state,score", "profile.lang", NULL};
    declare(s, coll, idx, NULL);
    /* 30 documents: scores 0..9 three times each (ties), state open/closed */
    for (int i = 0; i < 30; i++) {
        char id[16], doc[160];
        snprintf(id, sizeof id, "d%02d", i);
        snprintf(doc, sizeof doc, "{\"state\":\"%s\",\"score\":%d,\"profile\":{\"lang\":\"%s\"}%s}",
                 i % 3 == 2 ? "closed" : "open", i % 10, i % 2 ? "en" : "de", i == 7 ? ",\"flag\":true" : "");
        CHECK_INT(insert(s, coll, id, doc, NULL), 0);
    }
    res_t r = {0};
    cJSON *w = J("{\"state\":\"open\"}");
    CHECK_INT(bus_store_count(s, coll, w, count_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.count, 20);
    res_clear(&r);
    cJSON_Delete(w);
    CHECK_INT(bus_store_count(s, coll, NULL, count_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.count, 30);
    res_clear(&r);

    /* by _id, pages of 7: all 30 in id order, 5 pages */
    int pages = 0;
    cJSON *ids = page_all(s, coll, NULL, NULL, 7, NULL, &pages);
    CHECK_INT(cJSON_GetArraySize(ids), 30);
    CHECK_INT(pages, 5);
    for (int i = 0; i < 30; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%02d", i);
        CHECK_STR(cJSON_GetArrayItem(ids, i)->valuestring, id);
    }
    cJSON_Delete(ids);

    /* descending score with ties, equality on a nested path */
    ids = page_all(s, coll, "{\"profile.lang\":\"en\",\"state\":\"open\"}", "-score", 2, NULL, NULL);
    int prev_score = 1 << 20;
    char prev_id[16] = "zzz";
    cJSON *it;
    cJSON_ArrayForEach(it, ids) {
        cJSON *d;
        CHECK_INT(get(s, coll, it->valuestring, &d), 0);
        int sc = cJSON_GetObjectItem(d, "score")->valueint;
        CHECK_STR(sof(cJSON_GetObjectItem(d, "profile"), "lang"), "en");
        CHECK(sc < prev_score || (sc == prev_score && strcmp(it->valuestring, prev_id) < 0));
        prev_score = sc;
        snprintf(prev_id, sizeof prev_id, "%s", it->valuestring);
        cJSON_Delete(d);
    }
    /* odd i with state open: i%2==1 and i%3!=2 -> 10 documents */
    CHECK_INT(cJSON_GetArraySize(ids), 10);
    cJSON_Delete(ids);

    /* comparisons; $ne matches a missing field too */
    w = J("{\"score\":{\"$gte\":3,\"$lt\":5},\"state\":\"open\"}");
    CHECK_INT(bus_store_count(s, coll, w, count_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.count, 4); /* scores 3,4 x3 each = 6, minus closed ones (i=5? no: 14, 23 closed) */
    res_clear(&r);
    cJSON_Delete(w);
    w = J("{\"flag\":{\"$ne\":true}}");
    CHECK_INT(bus_store_count(s, coll, w, count_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.count, 29);
    res_clear(&r);
    cJSON_Delete(w);
    w = J("{\"flag\":true}");
    CHECK_INT(bus_store_count(s, coll, w, count_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.count, 1);
    res_clear(&r);
    cJSON_Delete(w);
    w = J("{\"flag\":null}");
    CHECK_INT(bus_store_count(s, coll, w, count_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.count, 29);
    res_clear(&r);
    cJSON_Delete(w);
    w = J("{\"state\":{\"$gt\":5}}"); /* number vs strings: never matches */
    CHECK_INT(bus_store_count(s, coll, w, count_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.count, 0);
    res_clear(&r);
    cJSON_Delete(w);

    /* stability: ascending score, pages of 4, documents inserted and deleted
     * between pages: every document present throughout is seen exactly once */
    ids = page_all(s, coll, "{\"state\":\"open\"}", "score", 4, mutate_between, NULL);
    int seen[30] = {0}, late_low = 0, late_high = 0;
    cJSON_ArrayForEach(it, ids) {
        int n;
        if (strcmp(it->valuestring, "late_low") == 0)
            late_low++;
        else if (strcmp(it->valuestring, "late_high") == 0)
            late_high++;
        else if (sscanf(it->valuestring, "d%d", &n) == 1)
            seen[n]++;
    }
    for (int i = 0; i < 30; i++) {
        int expect = (i % 3 == 2 || i == 3) ? 0 : 1;
        if (seen[i] != expect) fprintf(stderr, "  d%02d seen %d times\n", i, seen[i]);
        CHECK_INT(seen[i], expect);
    }
    CHECK_INT(late_low, 1);  /* sorts after the cursor: seen */
    CHECK_INT(late_high, 0); /* sorts before the cursor: not seen */
    cJSON_Delete(ids);

    /* a forged cursor */
    bus_store_query_t q = {.cursor = "!!notacursor"};
    CHECK_INT(bus_store_find(s, coll, &q, find_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_EBAD_REQUEST);
    res_clear(&r);
    /* a bad filter is refused at once */
    w = J("{\"state\":{\"$regex\":\"x\"}}");
    CHECK_INT(bus_store_count(s, coll, w, count_cb, &r), BUS_EBAD_REQUEST);
    cJSON_Delete(w);
    w = J("{\"_v\":1}");
    CHECK_INT(bus_store_count(s, coll, w, count_cb, &r), BUS_EBAD_REQUEST);
    cJSON_Delete(w);
    close_store(s);
}

static void t_claim_inproc(const char *be) {
    use_backend(be);
    bus_store_t *s = open_store();
    const char *coll = C("jobs");
    const char *idx[] = {"state,due", NULL};
    declare(s, coll, idx, NULL);
    for (int i = 0; i < 10; i++) {
        char id[16], doc[64];
        snprintf(id, sizeof id, "j%d", i);
        snprintf(doc, sizeof doc, "{\"state\":\"pending\",\"due\":%d}", 100 - i);
        CHECK_INT(insert(s, coll, id, doc, NULL), 0);
    }
    /* 16 claims in flight at once on the thread pool */
    res_t r[16];
    memset(r, 0, sizeof r);
    cJSON *w = J("{\"state\":\"pending\",\"due\":{\"$lte\":95}}");
    cJSON *p = J("{\"state\":\"claimed\",\"owner\":\"me\"}");
    for (int i = 0; i < 16; i++) CHECK_INT(bus_store_find_one_and_update(s, coll, w, "due", p, doc_cb, &r[i]), 0);
    cJSON_Delete(w);
    cJSON_Delete(p);
    int ok = 0, nf = 0;
    char got[10] = {0};
    for (int i = 0; i < 16; i++) {
        wait_for(&r[i]);
        if (r[i].status == 0) {
            ok++;
            int n = atoi(sof(r[i].doc, "_id") + 1);
            CHECK(got[n] == 0);
            got[n] = 1;
            CHECK_STR(sof(r[i].doc, "state"), "claimed");
            CHECK_INT(vof(r[i].doc), 2);
            CHECK(cJSON_GetObjectItem(r[i].doc, "due")->valueint <= 95);
        } else {
            CHECK_INT(r[i].status, BUS_ENOT_FOUND);
            nf++;
        }
        res_clear(&r[i]);
    }
    CHECK_INT(ok, 5); /* due <= 95: j5..j9 */
    CHECK_INT(nf, 11);
    close_store(s);
}

/* Two processes claim from one store until nothing is left; every job is
 * claimed exactly once. */
static void claimer(const char *coll, int fd, int who, int ready, int go) {
    loop = uv_default_loop();
    CHECK_INT(uv_loop_fork(loop), 0);
    bus_store_t *s = open_store();
    declare(s, coll, NULL, NULL);
    char c = 'r';
    CHECK(write(ready, &c, 1) == 1); /* open and declared (its schema write done) */
    CHECK(read(go, &c, 1) == 1);     /* both start together */
    cJSON *w = J("{\"state\":\"pending\"}");
    char pj[64];
    snprintf(pj, sizeof pj, "{\"state\":\"claimed\",\"by\":%d}", who);
    cJSON *p = J(pj);
    for (;;) {
        res_t r = {0};
        CHECK_INT(bus_store_find_one_and_update(s, coll, w, NULL, p, doc_cb, &r), 0);
        wait_for(&r);
        if (r.status == BUS_ENOT_FOUND) break;
        CHECK_INT(r.status, 0);
        char line[64];
        int n = snprintf(line, sizeof line, "%s\n", sof(r.doc, "_id"));
        CHECK(write(fd, line, (size_t)n) == n);
        res_clear(&r);
        usleep(300); /* "work" on the job before claiming the next */
    }
    cJSON_Delete(w);
    cJSON_Delete(p);
    close_store(s);
}

static void t_claim_procs(const char *be) {
    use_backend(be);
    enum { N = 300 };
    const char *coll = C("work");
    {
        bus_store_t *s = open_store();
        declare(s, coll, NULL, NULL);
        /* one batch of inserts is quicker than 300 round trips */
        for (int base = 0; base < N; base += 50) {
            bus_store_op_t ops[50];
            cJSON *doc = J("{\"state\":\"pending\"}");
            char ids[50][16];
            for (int i = 0; i < 50; i++) {
                snprintf(ids[i], sizeof ids[i], "w%03d", base + i);
                ops[i] = (bus_store_op_t){.kind = BUS_STORE_OP_INSERT, .coll = coll, .id = ids[i], .doc = doc};
            }
            res_t r = {0};
            CHECK_INT(bus_store_batch(s, ops, 50, batch_cb, &r), 0);
            wait_for(&r);
            CHECK_INT(r.status, 0);
            cJSON_Delete(doc);
        }
        close_store(s);
    }
    char path[2][600];
    pid_t pid[2];
    int go[2], ready[2];
    CHECK(pipe(go) == 0);
    CHECK(pipe(ready) == 0);
    for (int k = 0; k < 2; k++) {
        snprintf(path[k], sizeof path[k], "%s/claims%s.%d", tmpdir(), sfx, k);
        fflush(NULL);
        pid[k] = fork();
        CHECK(pid[k] >= 0);
        if (pid[k] == 0) {
            FILE *f = fopen(path[k], "w");
            if (!f) _exit(3);
            close(go[1]);
            close(ready[0]);
            claimer(coll, fileno(f), k, ready[1], go[0]);
            fclose(f);
            _exit(0);
        }
    }
    close(go[0]);
    close(ready[1]);
    /* go only once both are ready: a slow start (ASan) would otherwise leave
     * one process all the work, and the race this test is about unrun */
    char r2[2];
    CHECK(read(ready[0], r2, 1) == 1 && read(ready[0], r2 + 1, 1) == 1);
    close(ready[0]);
    CHECK(write(go[1], "gg", 2) == 2);
    close(go[1]);
    for (int k = 0; k < 2; k++) {
        int st;
        CHECK(waitpid(pid[k], &st, 0) == pid[k]);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    int seen[N] = {0}, per[2] = {0};
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(path[k], "r");
        CHECK(f != NULL);
        int n;
        while (fscanf(f, " w%d", &n) == 1) {
            CHECK(n >= 0 && n < N);
            seen[n]++;
            per[k]++;
        }
        fclose(f);
    }
    for (int i = 0; i < N; i++) CHECK_INT(seen[i], 1);
    printf("  claims: process A %d, process B %d\n", per[0], per[1]);
    CHECK(per[0] > 0 && per[1] > 0);
}

/* Many writes in flight at once (on SQLite they share group commits): each
 * succeeds or fails by itself, a failed batch leaves nothing behind, and no
 * write is lost. */
static void t_many_writes(const char *be) {
    use_backend(be);
    bus_store_t *s = open_store();
    const char *coll = C("many");
    declare(s, coll, NULL, NULL);
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "x%03d", i * 10);
        CHECK_INT(insert(s, coll, id, "{\"pre\":true}", NULL), 0);
    }
    CHECK_INT(insert(s, coll, "ctr", "{\"n\":-1}", NULL), 0);

    enum { NI = 100, NB = 20, NU = 30 };
    static res_t ri[NI], rb[NB], ru[NU];
    memset(ri, 0, sizeof ri), memset(rb, 0, sizeof rb), memset(ru, 0, sizeof ru);
    cJSON *doc = J("{\"pre\":false}");
    char bid[NB][16];
    for (int i = 0; i < NI; i++) { /* interleaved, nothing awaited */
        char id[16];
        snprintf(id, sizeof id, "x%03d", i);
        CHECK_INT(bus_store_insert(s, coll, id, doc, doc_cb, &ri[i]), 0);
        if (i < NB) { /* even batches fail at their second operation */
            snprintf(bid[i], sizeof bid[i], "b%02d", i);
            bus_store_op_t ops[] = {
                {BUS_STORE_OP_INSERT, coll, bid[i], 0, doc},
                {BUS_STORE_OP_UPDATE, coll, i % 2 ? "ctr" : "absent", BUS_STORE_ANY_VERSION, doc},
            };
            rb[i].nops = 2;
            CHECK_INT(bus_store_batch(s, ops, 2, batch_cb, &rb[i]), 0);
        }
        if (i < NU) {
            char patch[32];
            snprintf(patch, sizeof patch, "{\"n\":%d}", i);
            cJSON *p = J(patch);
            CHECK_INT(bus_store_update(s, coll, "ctr", BUS_STORE_ANY_VERSION, p, doc_cb, &ru[i]), 0);
            cJSON_Delete(p);
        }
    }
    cJSON_Delete(doc);
    for (int i = 0; i < NI; i++) {
        wait_for(&ri[i]);
        CHECK_INT(ri[i].status, i % 10 == 0 ? BUS_ECONFLICT : 0);
        res_clear(&ri[i]);
    }
    for (int i = 0; i < NB; i++) {
        wait_for(&rb[i]);
        CHECK_INT(rb[i].status, i % 2 ? 0 : BUS_ENOT_FOUND);
        CHECK_INT(rb[i].failed, i % 2 ? -1 : 1);
        CHECK_INT(get(s, coll, bid[i], NULL), i % 2 ? 0 : BUS_ENOT_FOUND);
        res_clear(&rb[i]);
    }
    for (int i = 0; i < NU; i++) {
        wait_for(&ru[i]);
        CHECK_INT(ru[i].status, 0);
        res_clear(&ru[i]);
    }
    /* every insert stored once; the counter saw 30 updates and 10 batches */
    res_t rc = {0};
    CHECK_INT(bus_store_count(s, coll, NULL, count_cb, &rc), 0);
    wait_for(&rc);
    CHECK_INT(rc.count, NI + NB / 2 + 1);
    cJSON *ctr;
    CHECK_INT(get(s, coll, "ctr", &ctr), 0);
    CHECK_INT(vof(ctr), 1 + NU + NB / 2);
    cJSON_Delete(ctr);
    close_store(s);
}

/* Transfer leadership: two memberships and the alliance change together,
 * with the processed marker of the request, all or nothing. */
static void t_batch(const char *be) {
    use_backend(be);
    bus_store_t *s = open_store();
    const char *al = C("alliance"), *mem = C("membership");
    declare(s, al, NULL, NULL);
    const char *uniq[] = {"leader_of", NULL};
    declare(s, mem, NULL, uniq);
    CHECK_INT(insert(s, al, "A", "{\"leader\":\"u1\"}", NULL), 0);
    CHECK_INT(insert(s, mem, "A:u1", "{\"rank\":\"R5\",\"leader_of\":\"A\"}", NULL), 0);
    CHECK_INT(insert(s, mem, "A:u2", "{\"rank\":\"R4\"}", NULL), 0);

    cJSON *pa = J("{\"leader\":\"u2\"}"), *p1 = J("{\"rank\":\"R4\",\"leader_of\":null}"),
          *p2 = J("{\"rank\":\"R5\",\"leader_of\":\"A\"}"), *reply = J("{\"success\":true,\"data\":{\"leader\":\"u2\"}}");
    bus_store_op_t ops[] = {
        {BUS_STORE_OP_UPDATE, mem, "A:u1", 1, p1},
        {BUS_STORE_OP_UPDATE, mem, "A:u2", 1, p2},
        {BUS_STORE_OP_UPDATE, al, "A", 1, pa},
        {BUS_STORE_OP_MARK, "alliances.rpc", "req-1", 0, reply},
    };
    res_t r = {0};
    /* unknown marker */
    CHECK_INT(bus_store_processed_get(s, "alliances.rpc", "req-1", doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ENOT_FOUND);
    res_clear(&r);

    r.nops = 4;
    CHECK_INT(bus_store_batch(s, ops, 4, batch_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.failed, -1);
    CHECK_INT(r.versions[0], 2);
    CHECK_INT(r.versions[1], 2);
    CHECK_INT(r.versions[2], 2);
    res_clear(&r);
    cJSON *d;
    CHECK_INT(get(s, mem, "A:u2", &d), 0);
    CHECK_STR(sof(d, "rank"), "R5");
    cJSON_Delete(d);
    CHECK_INT(get(s, mem, "A:u1", &d), 0);
    CHECK(cJSON_GetObjectItem(d, "leader_of") == NULL);
    cJSON_Delete(d);

    /* redelivery of req-1: the marker conflicts, nothing changes, the stored
     * reply is found */
    ops[0].version = 2, ops[1].version = 2, ops[2].version = 2;
    r.nops = 4;
    CHECK_INT(bus_store_batch(s, ops, 4, batch_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ECONFLICT);
    CHECK_INT(r.failed, 3);
    res_clear(&r);
    CHECK_INT(get(s, al, "A", &d), 0);
    CHECK_INT(vof(d), 2);
    cJSON_Delete(d);
    CHECK_INT(bus_store_processed_get(s, "alliances.rpc", "req-1", doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r.doc, "success")));
    CHECK_STR(sof(cJSON_GetObjectItem(r.doc, "data"), "leader"), "u2");
    res_clear(&r);

    /* a stale version in the middle: nothing applied, not even the first
     * operation or the marker */
    ops[3].id = "req-2";
    ops[1].version = 1;
    r.nops = 4;
    CHECK_INT(bus_store_batch(s, ops, 4, batch_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ECONFLICT);
    CHECK_INT(r.failed, 1);
    res_clear(&r);
    CHECK_INT(get(s, mem, "A:u1", &d), 0);
    CHECK_INT(vof(d), 2);
    cJSON_Delete(d);
    CHECK_INT(bus_store_processed_get(s, "alliances.rpc", "req-2", doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ENOT_FOUND);
    res_clear(&r);

    /* a unique violation inside a batch, and insert + delete */
    cJSON *nd = J("{\"rank\":\"R5\",\"leader_of\":\"A\"}");
    bus_store_op_t ops2[] = {
        {BUS_STORE_OP_DELETE, mem, "A:u1", 2, NULL},
        {BUS_STORE_OP_INSERT, mem, "A:u3", 0, nd},
    };
    r.nops = 2;
    CHECK_INT(bus_store_batch(s, ops2, 2, batch_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ECONFLICT);
    CHECK_INT(r.failed, 1);
    res_clear(&r);
    CHECK_INT(get(s, mem, "A:u1", NULL), 0);
    cJSON_ReplaceItemInObject(nd, "leader_of", cJSON_CreateString("B"));
    r.nops = 2;
    CHECK_INT(bus_store_batch(s, ops2, 2, batch_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.versions[1], 1);
    res_clear(&r);
    CHECK_INT(get(s, mem, "A:u1", NULL), BUS_ENOT_FOUND);

    /* processed_put and prune */
    CHECK_INT(bus_store_processed_put(s, "events", "ev-9", NULL, status_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    res_clear(&r);
    CHECK_INT(bus_store_processed_put(s, "events", "ev-9", NULL, status_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ECONFLICT);
    res_clear(&r);
    CHECK_INT(bus_store_processed_prune(s, 3600 * 1000, count_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.count, 0);
    res_clear(&r);
    usleep(20 * 1000);
    CHECK_INT(bus_store_processed_prune(s, 5, count_cb, &r), 0);
    wait_for(&r);
    CHECK(r.count >= 2);
    res_clear(&r);
    CHECK_INT(bus_store_processed_get(s, "events", "ev-9", doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ENOT_FOUND);
    res_clear(&r);

    cJSON_Delete(pa), cJSON_Delete(p1), cJSON_Delete(p2), cJSON_Delete(reply), cJSON_Delete(nd);
    close_store(s);
}

static int closed_flag;
static void on_closed(void *d) { *(int *)d = 1; }

static void t_restart(const char *be) {
    use_backend(be);
    const char *coll = C("durable");
    bus_store_t *s = open_store();
    declare(s, coll, NULL, NULL);
    CHECK_INT(insert(s, coll, "k", "{\"x\":\"kept\"}", NULL), 0);
    res_t r = {0};
    cJSON *res = J("{\"n\":1}");
    CHECK_INT(bus_store_processed_put(s, "scope", "id-1", res, status_cb, &r), 0);
    cJSON_Delete(res);
    /* close with the marker still in flight: its callback still runs */
    closed_flag = 0;
    bus_store_close(s, on_closed, &closed_flag);
    CHECK_INT(closed_flag, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK_INT(r.done, 1);
    CHECK_INT(r.status, 0);
    CHECK_INT(closed_flag, 1);
    res_clear(&r);

    s = open_store();
    declare(s, coll, NULL, NULL);
    cJSON *d;
    CHECK_INT(get(s, coll, "k", &d), 0);
    CHECK_STR(sof(d, "x"), "kept");
    cJSON_Delete(d);
    CHECK_INT(bus_store_processed_get(s, "scope", "id-1", doc_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(cJSON_GetObjectItem(r.doc, "n")->valueint, 1);
    res_clear(&r);
    /* closing: new operations fail at once */
    bus_store_close(s, on_closed, &closed_flag);
    uv_run(loop, UV_RUN_DEFAULT);
}

/* ---- backend-independent -------------------------------------------------- */

static void t_open_errors(void) {
    loop = uv_default_loop();
    bus_store_t *s = NULL;
    char err[512];
    CHECK_INT(bus_store_open(loop, "postgres://x", &s, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "BUS_STORE");
    CHECK(s == NULL);
    CHECK_INT(bus_store_open(loop, "sqlite:/nonexistent-dir/x/y.db", &s, err, sizeof err), BUS_EUNAVAILABLE);
    CHECK_CONTAINS(err, "BUS_STORE=sqlite:/nonexistent-dir/x/y.db");
    CHECK_INT(bus_store_open(loop, "sqlite:x.db?bogus=1", &s, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "bogus");
    /* the MongoDB plugin missing: a message naming the way to point at it */
    setenv("BUS_MONGO_PLUGIN", "/nonexistent/libbus-mongo.so", 1);
    CHECK_INT(bus_store_open(loop, "mongodb://127.0.0.1:1/bus", &s, err, sizeof err), BUS_EUNAVAILABLE);
    CHECK_CONTAINS(err, "BUS_MONGO_PLUGIN=/nonexistent/libbus-mongo.so");
    unsetenv("BUS_MONGO_PLUGIN");
    /* an unreachable MongoDB (the plugin found next to the program, in the
     * build tree): a clear message naming the setting */
    int rc = bus_store_open(loop, "mongodb://127.0.0.1:1/bus?serverSelectionTimeoutMS=300", &s, err, sizeof err);
    CHECK_INT(rc, BUS_EUNAVAILABLE);
    CHECK_CONTAINS(err, "BUS_STORE");
    /* the plugin loaded (every symbol it takes from the program, listed in
     * bus/src/store_mongo.syms, resolved) and got as far as connecting */
    CHECK_CONTAINS(err, "MongoDB unreachable");
    printf("  mongodb unreachable: %s\n", err);
    /* a declared name that could inject SQL */
    snprintf(url, sizeof url, "sqlite:%s/names.db", tmpdir());
    s = open_store();
    CHECK_INT(bus_store_declare(s, "x\"; DROP TABLE y; --", NULL, NULL, err, sizeof err), BUS_EBAD_REQUEST);
    const char *bad[] = {"a,b'c", NULL};
    CHECK_INT(bus_store_declare(s, "ok", bad, NULL, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_STR(bus_store_backend(s), "sqlite");
    close_store(s);
}

/* A file that becomes unwritable at run time: unavailable, not a crash. */
static void t_runtime_unavailable(void) {
    loop = uv_default_loop();
    snprintf(sfx, sizeof sfx, "_%ld", (long)getpid());
    char dir[600];
    snprintf(dir, sizeof dir, "%s/rt%s", tmpdir(), sfx);
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(url, sizeof url, "sqlite:%s/db", dir);
    bus_store_t *s = open_store();
    declare(s, "c", NULL, NULL);
    /* remove the whole directory under the open store: new connections (pool
     * threads) cannot open the file */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    res_t r[4];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 4; i++) CHECK_INT(bus_store_get(s, "c", "x", doc_cb, &r[i]), 0);
    int unavailable = 0;
    for (int i = 0; i < 4; i++) {
        wait_for(&r[i]);
        CHECK(r[i].status == BUS_EUNAVAILABLE || r[i].status == BUS_ENOT_FOUND || r[i].status == BUS_EINTERNAL);
        unavailable += r[i].status == BUS_EUNAVAILABLE;
        res_clear(&r[i]);
    }
    CHECK(unavailable > 0);
    /* the health check says so too (some pool thread has no connection) */
    int down = 0;
    for (int i = 0; i < 8; i++) {
        res_t p = {0};
        CHECK_INT(bus_store_ping(s, status_cb, &p), 0);
        wait_for(&p);
        down += p.status == BUS_EUNAVAILABLE;
    }
    CHECK(down > 0);
    close_store(s);
}

#define BOTH(name, fn, t) {name "_sqlite", fn##_sqlite, t}, {name "_mongodb", fn##_mongodb, t}
#define DEF(fn)                                      \
    static void fn##_sqlite(void) { fn("sqlite"); }  \
    static void fn##_mongodb(void) { fn("mongodb"); }
DEF(t_crud)
DEF(t_unique)
DEF(t_find)
DEF(t_claim_inproc)
DEF(t_claim_procs)
DEF(t_batch)
DEF(t_many_writes)
DEF(t_restart)

BUS_TESTS({"open_errors", t_open_errors, 20}, {"runtime_unavailable", t_runtime_unavailable, 20},
          BOTH("crud", t_crud, 20), BOTH("unique", t_unique, 20), BOTH("find", t_find, 30),
          BOTH("claim_inproc", t_claim_inproc, 20), BOTH("claim_two_processes", t_claim_procs, 60),
          BOTH("batch_exactly_once", t_batch, 20), BOTH("many_writes", t_many_writes, 30), BOTH("restart", t_restart, 20))
