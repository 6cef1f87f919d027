/* Message catalogues and plural rules (i18n.h). */
#include "i18n.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const nt_languages[NT_NLANGS] = {"en", "it", "ko", "zh", "ja", "ar", "es", "de", "fr", "ru", "uk"};

struct nt_catalogs {
    cJSON *lang[NT_NLANGS];
};

static int lang_index(const char *lang) {
    for (int i = 0; i < NT_NLANGS; i++)
        if (lang && strcmp(lang, nt_languages[i]) == 0) return i;
    return -1;
}

static cJSON *read_json(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "BUS_NOTIFY_I18N_DIR: cannot read %s", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)n) {
        free(buf);
        snprintf(err, errlen, "BUS_NOTIFY_I18N_DIR: cannot read %s", path);
        return NULL;
    }
    buf[n] = 0;
    cJSON *j = cJSON_ParseWithLength(buf, (size_t)n);
    free(buf);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        snprintf(err, errlen, "BUS_NOTIFY_I18N_DIR: %s is not a JSON object", path);
        return NULL;
    }
    return j;
}

int nt_catalogs_load(const char *dir, nt_catalogs_t **out, char *err, size_t errlen) {
    nt_catalogs_t *c = calloc(1, sizeof *c);
    if (!c) return -1;
    for (int i = 0; i < NT_NLANGS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.json", dir, nt_languages[i]);
        c->lang[i] = read_json(path, err, errlen);
        if (!c->lang[i]) {
            nt_catalogs_free(c);
            return -1;
        }
    }
    *out = c;
    return 0;
}

void nt_catalogs_free(nt_catalogs_t *c) {
    if (!c) return;
    for (int i = 0; i < NT_NLANGS; i++) cJSON_Delete(c->lang[i]);
    free(c);
}

const cJSON *nt_catalog(const nt_catalogs_t *c, const char *lang) {
    int i = lang_index(lang);
    return c && i >= 0 ? c->lang[i] : NULL;
}

/* ---- plural rules (integers only: v = 0, so i = n) ------------------------ */

const char *nt_plural_category(const char *lang, int64_t n) {
    if (n < 0) n = -n;
    int64_t m10 = n % 10, m100 = n % 100;
    if (!lang) lang = "en";
    if (!strcmp(lang, "ko") || !strcmp(lang, "zh") || !strcmp(lang, "ja")) return "other";
    if (!strcmp(lang, "fr")) return n == 0 || n == 1 ? "one" : (n != 0 && n % 1000000 == 0 ? "many" : "other");
    if (!strcmp(lang, "es") || !strcmp(lang, "it"))
        return n == 1 ? "one" : (n != 0 && n % 1000000 == 0 ? "many" : "other");
    if (!strcmp(lang, "ru") || !strcmp(lang, "uk")) {
        if (m10 == 1 && m100 != 11) return "one";
        if (m10 >= 2 && m10 <= 4 && !(m100 >= 12 && m100 <= 14)) return "few";
        return "many";
    }
    if (!strcmp(lang, "ar")) {
        if (n == 0) return "zero";
        if (n == 1) return "one";
        if (n == 2) return "two";
        if (m100 >= 3 && m100 <= 10) return "few";
        if (m100 >= 11 && m100 <= 99) return "many";
        return "other";
    }
    return n == 1 ? "one" : "other"; /* en, de */
}

const char *const *nt_plural_categories(const char *lang) {
    static const char *const only_other[] = {"other", NULL};
    static const char *const one_other[] = {"one", "other", NULL};
    static const char *const one_many_other[] = {"one", "many", "other", NULL};
    static const char *const slavic[] = {"one", "few", "many", "other", NULL};
    static const char *const arabic[] = {"zero", "one", "two", "few", "many", "other", NULL};
    if (!lang) return one_other;
    if (!strcmp(lang, "ko") || !strcmp(lang, "zh") || !strcmp(lang, "ja")) return only_other;
    if (!strcmp(lang, "fr") || !strcmp(lang, "es") || !strcmp(lang, "it")) return one_many_other;
    if (!strcmp(lang, "ru") || !strcmp(lang, "uk")) return slavic;
    if (!strcmp(lang, "ar")) return arabic;
    return one_other;
}

/* ---- formatting ---------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n) {
    if (!b->p && b->cap == (size_t)-1) return; /* out of memory earlier */
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            free(b->p);
            b->p = NULL;
            b->cap = (size_t)-1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

char *nt_interpolate(const char *text, const cJSON *vars) {
    sbuf_t b = {0};
    sb_add(&b, "", 0);
    const char *s = text ? text : "";
    while (*s) {
        const char *open = strchr(s, '{');
        const char *close = open ? strchr(open, '}') : NULL;
        if (!open || !close) {
            sb_add(&b, s, strlen(s));
            break;
        }
        sb_add(&b, s, (size_t)(open - s));
        char name[64];
        size_t n = (size_t)(close - open - 1);
        const cJSON *v = NULL;
        if (n > 0 && n < sizeof name) {
            memcpy(name, open + 1, n);
            name[n] = 0;
            v = cJSON_GetObjectItemCaseSensitive(vars, name);
        }
        if (cJSON_IsString(v)) {
            sb_add(&b, v->valuestring, strlen(v->valuestring));
        } else if (cJSON_IsNumber(v)) {
            char num[32];
            snprintf(num, sizeof num, "%lld", (long long)v->valuedouble);
            sb_add(&b, num, strlen(num));
        } else {
            sb_add(&b, open, (size_t)(close - open + 1)); /* left as written */
        }
        s = close + 1;
    }
    return b.p;
}

/* The message of key in one catalogue: the string, or the plural form for
 * vars; NULL when the catalogue lacks it. */
static const char *message_in(const cJSON *cat, const char *lang, const char *key, const cJSON *vars) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(cat, key);
    if (cJSON_IsString(m)) return m->valuestring;
    if (!cJSON_IsObject(m)) return NULL;
    const cJSON *count = cJSON_GetObjectItemCaseSensitive(m, "count");
    const cJSON *n = cJSON_IsString(count) ? cJSON_GetObjectItemCaseSensitive(vars, count->valuestring) : NULL;
    const char *cat_name = nt_plural_category(lang, cJSON_IsNumber(n) ? (int64_t)n->valuedouble : 0);
    const cJSON *form = cJSON_GetObjectItemCaseSensitive(m, cat_name);
    if (!cJSON_IsString(form)) form = cJSON_GetObjectItemCaseSensitive(m, "other");
    return cJSON_IsString(form) ? form->valuestring : NULL;
}

char *nt_format(const nt_catalogs_t *c, const char *lang, const char *key, const cJSON *vars) {
    const char *msg = message_in(nt_catalog(c, lang), lang, key, vars);
    if (!msg) msg = message_in(nt_catalog(c, "en"), "en", key, vars);
    if (!msg) msg = key;
    return nt_interpolate(msg, vars);
}
