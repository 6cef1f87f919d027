/* Message catalogues: one JSON file per language, <dir>/<lang>.json, where
 * <dir> is the setting BUS_NOTIFY_I18N_DIR (default
 * workers/notifications/i18n, i.e. the repository's files when run from its
 * root; `make install` copies them to <prefix>/share/bus/i18n).
 *
 * A file is an object of key -> message. A message is a string with named
 * placeholders ("{name} starts now"), or a plural object whose "count"
 * member names the placeholder that selects the form and whose other
 * members are the CLDR plural categories the language uses:
 *   {"count": "minutes", "one": "{name} starts in {minutes} minute",
 *    "other": "{name} starts in {minutes} minutes"}
 * Lookup: the language's message, else English's, else the key itself.
 * A placeholder without a value is left as written ("{name}").
 *
 * Ownership: nt_catalogs_load returns an object the caller frees with
 * nt_catalogs_free; nt_format returns a malloc'd string. Pure: no loop,
 * any thread.
 */
#ifndef NT_I18N_H
#define NT_I18N_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#define NT_NLANGS 11
extern const char *const nt_languages[NT_NLANGS]; /* en first */

typedef struct nt_catalogs nt_catalogs_t;

/* Loads every language's file from dir. English is required (error with
 * the path in err); another missing or broken file is an error too, since
 * the repository ships all of them. */
int nt_catalogs_load(const char *dir, nt_catalogs_t **out, char *err, size_t errlen);
void nt_catalogs_free(nt_catalogs_t *c);
const cJSON *nt_catalog(const nt_catalogs_t *c, const char *lang); /* NULL when not loaded */

/* The CLDR plural category of the integer n in lang: "zero", "one", "two",
 * "few", "many" or "other" (the cardinal rules for integers of CLDR 44 for
 * our 11 languages). */
const char *nt_plural_category(const char *lang, int64_t n);
/* The categories lang uses, NULL-terminated ("one","other" for en). */
const char *const *nt_plural_categories(const char *lang);

/* Renders key in lang with vars (an object of placeholder -> string or
 * number). Never NULL except out of memory. */
char *nt_format(const nt_catalogs_t *c, const char *lang, const char *key, const cJSON *vars);
/* Replaces {placeholders} of text with vars (malloc'd). */
char *nt_interpolate(const char *text, const cJSON *vars);

#endif
