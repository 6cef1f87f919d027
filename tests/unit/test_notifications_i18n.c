/* bus-notifications' pure parts: the catalogues in workers/notifications/i18n
 * (every language has every key of English with the same placeholders, and
 * every plural category its language needs), the CLDR plural rules, lookup
 * fallbacks (language -> English -> the key), Telegram HTML escaping and the
 * webhook signature (a known HMAC-SHA256 vector).
 *
 * The worker's sources are compiled in here: they are not part of libbus. */
#include <stdlib.h>
#include <string.h>

#include "../../workers/notifications/i18n.c"
#include "../test.h"

#define DIR "workers/notifications/i18n"

/* The placeholders of a text, sorted and joined: "{minutes}{name}". */
static void placeholders(const char *text, char *out, size_t cap) {
    char names[16][64];
    int n = 0;
    for (const char *s = text; (s = strchr(s, '{')) != NULL && n < 16;) {
        const char *e = strchr(s, '}');
        if (!e) break;
        snprintf(names[n++], 64, "%.*s", (int)(e - s + 1), s);
        s = e + 1;
    }
    for (int i = 0; i < n; i++) /* sort */
        for (int j = i + 1; j < n; j++)
            if (strcmp(names[i], names[j]) > 0) {
                char t[64];
                memcpy(t, names[i], 64);
                memcpy(names[i], names[j], 64);
                memcpy(names[j], t, 64);
            }
    out[0] = 0;
    for (int i = 0; i < n; i++)
        if (i == 0 || strcmp(names[i], names[i - 1]) != 0) strncat(out, names[i], cap - strlen(out) - 1);
}

static void without(char *set, const char *name) {
    char *p = strstr(set, name);
    if (p) memmove(p, p + strlen(name), strlen(p + strlen(name)) + 1);
}

static void test_catalogues_complete(void) {
    nt_catalogs_t *c = NULL;
    char err[512] = "";
    if (nt_catalogs_load(DIR, &c, err, sizeof err) != 0) fprintf(stderr, "  %s\n", err);
    CHECK(c != NULL);
    const cJSON *en = nt_catalog(c, "en"), *msg;
    CHECK(cJSON_GetArraySize(en) >= 20);
    for (int l = 0; l < NT_NLANGS; l++) {
        const char *lang = nt_languages[l];
        const cJSON *cat = nt_catalog(c, lang);
        CHECK_INT(cJSON_GetArraySize(cat), cJSON_GetArraySize(en)); /* no stray keys either */
        cJSON_ArrayForEach(msg, en) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(cat, msg->string);
            if (!m) fprintf(stderr, "  %s.json lacks %s\n", lang, msg->string);
            CHECK(m != NULL);
            char want[256], got[256];
            if (cJSON_IsString(msg)) {
                CHECK(cJSON_IsString(m));
                placeholders(msg->valuestring, want, sizeof want);
                placeholders(m->valuestring, got, sizeof got);
                if (strcmp(want, got) != 0) fprintf(stderr, "  %s.json %s: %s vs %s\n", lang, msg->string, got, want);
                CHECK_STR(got, want);
                continue;
            }
            /* plural: the same count placeholder, every category of the language */
            CHECK(cJSON_IsObject(m));
            const char *count = cJSON_GetObjectItem(msg, "count")->valuestring;
            CHECK_STR(cJSON_GetObjectItem(m, "count")->valuestring, count);
            placeholders(cJSON_GetObjectItem(msg, "other")->valuestring, want, sizeof want);
            for (const char *const *k = nt_plural_categories(lang); *k; k++) {
                const cJSON *form = cJSON_GetObjectItem(m, *k);
                if (!cJSON_IsString(form)) fprintf(stderr, "  %s.json %s lacks the form %s\n", lang, msg->string, *k);
                CHECK(cJSON_IsString(form));
                placeholders(form->valuestring, got, sizeof got);
                char w[256], cnt[80];
                snprintf(w, sizeof w, "%s", want);
                snprintf(cnt, sizeof cnt, "{%s}", count);
                /* zero/one/two may spell the number out ("دقيقة واحدة") */
                if (!strcmp(*k, "zero") || !strcmp(*k, "one") || !strcmp(*k, "two")) {
                    without(w, cnt);
                    without(got, cnt);
                }
                if (strcmp(w, got) != 0) fprintf(stderr, "  %s.json %s.%s: %s vs %s\n", lang, msg->string, *k, got, w);
                CHECK_STR(got, w);
            }
        }
    }
    nt_catalogs_free(c);
}

static void test_plural_rules(void) {
    static const struct {
        const char *lang;
        int64_t n;
        const char *cat;
    } cases[] = {
        {"en", 0, "other"}, {"en", 1, "one"},  {"en", 2, "other"},  {"de", 1, "one"},   {"fr", 0, "one"},
        {"fr", 1, "one"},   {"fr", 2, "other"}, {"es", 1, "one"},   {"it", 5, "other"}, {"ja", 1, "other"},
        {"ko", 1, "other"}, {"zh", 2, "other"}, {"ru", 1, "one"},   {"ru", 21, "one"},  {"ru", 11, "many"},
        {"ru", 2, "few"},   {"ru", 4, "few"},   {"ru", 22, "few"},  {"ru", 12, "many"}, {"ru", 5, "many"},
        {"ru", 0, "many"},  {"ru", 111, "many"}, {"ru", 101, "one"}, {"uk", 3, "few"},  {"uk", 14, "many"},
        {"uk", 31, "one"},  {"ar", 0, "zero"},  {"ar", 1, "one"},   {"ar", 2, "two"},   {"ar", 3, "few"},
        {"ar", 10, "few"},  {"ar", 103, "few"}, {"ar", 11, "many"}, {"ar", 99, "many"}, {"ar", 100, "other"},
        {"ar", 102, "other"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = nt_plural_category(cases[i].lang, cases[i].n);
        if (strcmp(got, cases[i].cat) != 0)
            fprintf(stderr, "  %s %lld: %s, want %s\n", cases[i].lang, (long long)cases[i].n, got, cases[i].cat);
        CHECK_STR(got, cases[i].cat);
    }
}

static void test_format_and_fallback(void) {
    nt_catalogs_t *c = NULL;
    char err[512];
    CHECK_INT(nt_catalogs_load(DIR, &c, err, sizeof err), 0);
    cJSON *vars = cJSON_CreateObject();
    cJSON_AddStringToObject(vars, "name", "Bear Trap");
    cJSON_AddNumberToObject(vars, "minutes", 1);
    char *s = nt_format(c, "en", "reminder.body", vars);
    CHECK_STR(s, "Bear Trap starts in 1 minute.");
    free(s);
    cJSON_ReplaceItemInObject(vars, "minutes", cJSON_CreateNumber(3));
    s = nt_format(c, "uk", "reminder.body", vars);
    CHECK_STR(s, "Bear Trap почнеться через 3 хвилини.");
    free(s);
    cJSON_ReplaceItemInObject(vars, "minutes", cJSON_CreateNumber(11));
    s = nt_format(c, "ru", "reminder.body", vars);
    CHECK_STR(s, "Bear Trap начнётся через 11 минут.");
    free(s);
    /* a language we do not have -> English; a key nobody has -> the key */
    s = nt_format(c, "xx", "started.title", vars);
    CHECK_STR(s, "Bear Trap has started");
    free(s);
    s = nt_format(c, "de", "no.such.key", vars);
    CHECK_STR(s, "no.such.key");
    free(s);
    /* a key missing in one language falls back to English */
    cJSON *de = (cJSON *)nt_catalog(c, "de");
    cJSON_DeleteItemFromObject(de, "started.title");
    s = nt_format(c, "de", "started.title", vars);
    CHECK_STR(s, "Bear Trap has started");
    free(s);
    /* a placeholder without a value stays as written */
    s = nt_interpolate("{name} and {nobody}", vars);
    CHECK_STR(s, "Bear Trap and {nobody}");
    free(s);
    cJSON_Delete(vars);
    nt_catalogs_free(c);
}

BUS_TESTS({"catalogues_complete", test_catalogues_complete, 10}, {"plural_rules", test_plural_rules, 10},
          {"format_and_fallback", test_format_and_fallback, 10})
