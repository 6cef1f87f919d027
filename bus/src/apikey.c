/* API keys: load, look up by secret, scope checks, generation. See bus/apikey.h. */
#include "bus/apikey.h"

#include <cjson/cJSON.h>
#include <fnmatch.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bus/envelope.h"
#include "bus/error.h"

struct bus_apikey {
    char id[64];
    unsigned char digest[32];
    char **scopes;
    size_t nscopes;
};

struct bus_apikeys {
    bus_apikey_t *keys;
    size_t n;
};

static void sha256(const char *s, size_t len, unsigned char out[32]) {
    unsigned int n = 32;
    EVP_Digest(s, len, out, &n, EVP_sha256(), NULL);
}

void bus_sha256_hex(const char *s, size_t len, char out[65]) {
    unsigned char d[32];
    sha256(s, len, d);
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", d[i]);
    out[64] = '\0';
}

static int valid_id(const char *id) {
    if (!id || !*id || strlen(id) >= 64) return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
            return 0;
    return 1;
}

static int valid_scope(const char *s) {
    if (strcmp(s, "*") == 0) return 1;
    return strncmp(s, "rpc:", 4) == 0 || strncmp(s, "events:", 7) == 0 || strncmp(s, "audit:", 6) == 0;
}

static int hex_digest(const char *hex, unsigned char out[32]) {
    if (!hex || strlen(hex) != 64) return -1;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

void bus_apikeys_free(bus_apikeys_t *k) {
    if (!k) return;
    for (size_t i = 0; i < k->n; i++) {
        for (size_t j = 0; j < k->keys[i].nscopes; j++) free(k->keys[i].scopes[j]);
        free(k->keys[i].scopes);
    }
    free(k->keys);
    free(k);
}

int bus_apikeys_load(const char *path, bus_apikeys_t **out, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return BUS_EBAD_REQUEST;
    }
    bus_apikeys_t *k = calloc(1, sizeof *k);
    char line[8192];
    int lineno = 0, rc = 0;
    while (k && fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0') continue;
        char jerr[96];
        cJSON *o = bus_json_parse(p, strlen(p), BUS_JSON_MAX_DEPTH, jerr, sizeof jerr);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        const cJSON *hash = cJSON_GetObjectItemCaseSensitive(o, "sha256");
        const cJSON *scopes = cJSON_GetObjectItemCaseSensitive(o, "scopes");
        unsigned char digest[32];
        const char *why = NULL;
        if (!o) why = jerr; /* "malformed JSON at byte N" */
        else if (!cJSON_IsObject(o)) why = "not a JSON object";
        else if (!cJSON_IsString(id) || !valid_id(id->valuestring)) why = "\"id\" must be a name ([A-Za-z0-9._-], < 64)";
        else if (!cJSON_IsString(hash) || hex_digest(hash->valuestring, digest) != 0) why = "\"sha256\" must be 64 hex digits";
        else if (!cJSON_IsArray(scopes) || cJSON_GetArraySize(scopes) == 0) why = "\"scopes\" must be a non-empty array";
        const cJSON *s;
        cJSON_ArrayForEach(s, scopes) if (!why && (!cJSON_IsString(s) || !valid_scope(s->valuestring))) why =
            "a scope must be \"*\" or start with rpc:, events: or audit:";
        if (why) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            cJSON_Delete(o);
            rc = BUS_EBAD_REQUEST;
            break;
        }
        bus_apikey_t *grown = realloc(k->keys, (k->n + 1) * sizeof *grown);
        if (!grown) {
            cJSON_Delete(o);
            rc = BUS_EINTERNAL;
            break;
        }
        k->keys = grown;
        bus_apikey_t *key = &k->keys[k->n++];
        memset(key, 0, sizeof *key);
        snprintf(key->id, sizeof key->id, "%s", id->valuestring);
        memcpy(key->digest, digest, 32);
        key->nscopes = (size_t)cJSON_GetArraySize(scopes);
        key->scopes = calloc(key->nscopes, sizeof(char *));
        size_t j = 0;
        cJSON_ArrayForEach(s, scopes) key->scopes[j++] = strdup(s->valuestring);
        cJSON_Delete(o);
    }
    fclose(f);
    if (!k || rc != 0) {
        bus_apikeys_free(k);
        return rc ? rc : BUS_EINTERNAL;
    }
    *out = k;
    return 0;
}

size_t bus_apikeys_count(const bus_apikeys_t *k) { return k ? k->n : 0; }

const bus_apikey_t *bus_apikeys_find(const bus_apikeys_t *k, const char *secret) {
    if (!k || !secret || !*secret) return NULL;
    unsigned char d[32];
    sha256(secret, strlen(secret), d);
    const bus_apikey_t *found = NULL;
    for (size_t i = 0; i < k->n; i++)
        if (CRYPTO_memcmp(d, k->keys[i].digest, 32) == 0) found = &k->keys[i];
    return found;
}

const char *bus_apikey_id(const bus_apikey_t *key) { return key->id; }

int bus_apikey_allows(const bus_apikey_t *key, const char *scope) {
    for (size_t i = 0; i < key->nscopes; i++)
        if (fnmatch(key->scopes[i], scope, 0) == 0) return 1;
    return 0;
}

int bus_apikey_generate(const char *id, const char *scopes, char *secret, size_t secret_len, char *line,
                        size_t line_len, char *err, size_t errlen) {
    if (!valid_id(id)) {
        snprintf(err, errlen, "--id must be a name of [A-Za-z0-9._-], shorter than 64");
        return BUS_EBAD_REQUEST;
    }
    unsigned char raw[24];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        snprintf(err, errlen, "no randomness available");
        return BUS_EINTERNAL;
    }
    char hex[49];
    for (size_t i = 0; i < sizeof raw; i++) sprintf(hex + 2 * i, "%02x", raw[i]);
    snprintf(secret, secret_len, "bus_%s", hex);
    char digest[65];
    bus_sha256_hex(secret, strlen(secret), digest);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "sha256", digest);
    cJSON *arr = cJSON_AddArrayToObject(o, "scopes");
    char *copy = strdup(scopes);
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        if (!valid_scope(tok)) {
            snprintf(err, errlen, "scope \"%s\" must be \"*\" or start with rpc:, events: or audit:", tok);
            rc = BUS_EBAD_REQUEST;
            break;
        }
        cJSON_AddItemToArray(arr, cJSON_CreateString(tok));
    }
    free(copy);
    if (rc == 0 && cJSON_GetArraySize(arr) == 0) {
        snprintf(err, errlen, "--scopes needs at least one scope");
        rc = BUS_EBAD_REQUEST;
    }
    if (rc == 0) {
        char *s = cJSON_PrintUnformatted(o);
        snprintf(line, line_len, "%s", s);
        free(s);
    }
    cJSON_Delete(o);
    return rc;
}
