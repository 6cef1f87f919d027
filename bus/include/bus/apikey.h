/* API keys for the HTTP edge (BUS_API_KEYS_FILE).
 *
 * The keys file holds one JSON object per line (blank lines and lines
 * starting with # are ignored):
 *   {"id":"raidbot","sha256":"<hex SHA-256 of the secret>","scopes":["rpc:alliances.*","events:alliance.*"]}
 * Secrets are never stored, only their SHA-256. Scopes are glob patterns
 * (fnmatch, '*' matches dots too) over "rpc:<service>.<method>",
 * "events:<type>", "audit:read"; "*" allows everything.
 *
 * Ownership: a bus_apikeys_t owns its keys; bus_apikeys_find returns a
 * pointer valid until bus_apikeys_free. Read-only after load (thread-safe).
 */
#ifndef BUS_APIKEY_H
#define BUS_APIKEY_H

#include <stddef.h>

typedef struct bus_apikeys bus_apikeys_t;
typedef struct bus_apikey bus_apikey_t;

/* Loads a keys file. 0, or BUS_EBAD_REQUEST with "path:line: reason" in err. */
int bus_apikeys_load(const char *path, bus_apikeys_t **out, char *err, size_t errlen);
void bus_apikeys_free(bus_apikeys_t *keys);
size_t bus_apikeys_count(const bus_apikeys_t *keys);
/* The key whose secret this is, or NULL (constant-time digest compare). */
const bus_apikey_t *bus_apikeys_find(const bus_apikeys_t *keys, const char *secret);
const char *bus_apikey_id(const bus_apikey_t *key);
/* 1 when one of the key's scopes matches `scope` ("rpc:alliances.create"). */
int bus_apikey_allows(const bus_apikey_t *key, const char *scope);
/* Lowercase hex SHA-256 of s (65 bytes with the NUL). */
void bus_sha256_hex(const char *s, size_t len, char out[65]);
/* Makes a new secret for `id` and the keys-file line for it. scopes is a
 * comma-separated list. 0 or BUS_EBAD_REQUEST (bad id or scope) with err. */
int bus_apikey_generate(const char *id, const char *scopes, char *secret, size_t secret_len, char *line,
                        size_t line_len, char *err, size_t errlen);

#endif
