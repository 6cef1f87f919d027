/* GET /api/v1/openapi.json: an OpenAPI 3.1 document built once at start
 * from the schema registry (schemas/), so it always matches what the edge
 * validates.
 *
 * - One POST operation per RPC method (/api/v1/rpc/<service>/<method>) and
 *   per event type (/api/v1/events/<type>), plus the fixed routes.
 * - Each schema file is copied under components/schemas/<name> (name =
 *   "<service>.<method>" or "event.<type>") with its local "$ref": "#/..."
 *   rewritten to point inside that component; operations reference
 *   .../definitions/params and .../definitions/result. OpenAPI 3.1 schema
 *   objects are JSON Schema, so draft-07 keywords carry over.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

/* Shared files (common.json, ...) that the copied schemas refer to; they
 * become components too. */
typedef struct {
    char names[16][64];
    int n;
} externals_t;

/* Rewrites refs in place: local "#/x" to "#/components/schemas/<name>/x";
 * a ref into another file ("../common.json#/definitions/rank", or by its
 * $id ".../common.json#/...") to "#/components/schemas/common/definitions/rank",
 * noting "common.json" in ext so that file is added as a component. */
static void rebase_refs(cJSON *node, const char *name, externals_t *ext) {
    if (!node) return;
    if (cJSON_IsObject(node)) {
        cJSON *ref = cJSON_GetObjectItemCaseSensitive(node, "$ref");
        if (cJSON_IsString(ref)) {
            const char *v = ref->valuestring;
            const char *hash = strchr(v, '#');
            char target[64] = "";
            const char *fragment = hash ? hash + 1 : "";
            if (v[0] == '#') {
                snprintf(target, sizeof target, "%s", name);
            } else {
                size_t flen = hash ? (size_t)(hash - v) : strlen(v);
                const char *base = v;
                for (size_t i = 0; i < flen; i++)
                    if (v[i] == '/') base = v + i + 1;
                size_t blen = flen - (size_t)(base - v);
                if (blen > 5 && blen < sizeof target && memcmp(base + blen - 5, ".json", 5) == 0) {
                    snprintf(target, sizeof target, "%.*s", (int)(blen - 5), base);
                    int known = 0;
                    for (int i = 0; i < ext->n; i++) known |= strcmp(ext->names[i], target) == 0;
                    if (!known && ext->n < 16) snprintf(ext->names[ext->n++], sizeof ext->names[0], "%s", target);
                }
            }
            if (target[0]) {
                size_t n = strlen(fragment) + strlen(target) + 32;
                char *s = malloc(n);
                if (s) {
                    snprintf(s, n, "#/components/schemas/%s%s", target, fragment);
                    cJSON_SetValuestring(ref, s);
                    free(s);
                }
            }
        }
    }
    for (cJSON *c = node->child; c; c = c->next) rebase_refs(c, name, ext);
}

/* Adds every shared file noted in ext (and what they refer to) from dir. */
static void add_externals(cJSON *schemas, externals_t *ext, const char *dir) {
    for (int i = 0; i < ext->n; i++) {
        if (cJSON_GetObjectItemCaseSensitive(schemas, ext->names[i])) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.json", dir, ext->names[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        char *text = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&text, &len);
        char buf[8192];
        size_t r;
        while (mem && (r = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, r, mem);
        fclose(f);
        if (mem) fclose(mem);
        cJSON *doc = text ? cJSON_ParseWithLength(text, len) : NULL;
        free(text);
        if (!doc) continue;
        cJSON_DeleteItemFromObjectCaseSensitive(doc, "$schema");
        rebase_refs(doc, ext->names[i], ext); /* may note more files: the loop reaches them */
        cJSON_AddItemToObject(schemas, ext->names[i], doc);
    }
}

static cJSON *ref_to(const char *name, const char *sub) {
    char buf[512];
    snprintf(buf, sizeof buf, "#/components/schemas/%s%s", name, sub ? sub : "");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "$ref", buf);
    return o;
}

static cJSON *json_content(cJSON *schema) {
    cJSON *content = cJSON_CreateObject();
    cJSON *mt = cJSON_AddObjectToObject(content, "application/json");
    cJSON_AddItemToObject(mt, "schema", schema);
    return content;
}

static void add_response(cJSON *responses, const char *code, const char *desc, cJSON *schema) {
    cJSON *r = cJSON_AddObjectToObject(responses, code);
    cJSON_AddStringToObject(r, "description", desc);
    if (schema) cJSON_AddItemToObject(r, "content", json_content(schema));
}

static void add_errors(cJSON *responses, int with_auth) {
    static const struct { const char *code, *desc; } errs[] = {
        {"400", "malformed JSON (with the byte offset) or bad request"},
        {"401", "missing or unknown API key"},
        {"403", "the key lacks the scope"},
        {"404", "unknown route or service"},
        {"413", "body too large"},
        {"415", "Content-Type is not JSON"},
        {"422", "schema violation (the message names the JSON paths)"},
        {"429", "rate limited (see Retry-After)"},
        {"503", "no live instance of the service, or the broker is down"},
        {"504", "the service did not answer in time"},
    };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        if (!with_auth && (errs[i].code[1] == '0' && (errs[i].code[2] == '1' || errs[i].code[2] == '3'))) continue;
        add_response(responses, errs[i].code, errs[i].desc, ref_to("Error", NULL));
    }
}

static cJSON *success_schema(cJSON *data) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "type", "object");
    cJSON *p = cJSON_AddObjectToObject(s, "properties");
    cJSON *ok = cJSON_AddObjectToObject(p, "success");
    cJSON_AddBoolToObject(ok, "const", 1);
    cJSON_AddItemToObject(p, "data", data ? data : cJSON_CreateObject());
    cJSON *rid = cJSON_AddObjectToObject(p, "request_id");
    cJSON_AddStringToObject(rid, "type", "string");
    return s;
}

static void add_get(cJSON *paths, const char *path, const char *summary, const char *ctype) {
    cJSON *item = cJSON_AddObjectToObject(paths, path);
    cJSON *op = cJSON_AddObjectToObject(item, "get");
    cJSON_AddStringToObject(op, "summary", summary);
    cJSON_AddItemToObject(op, "security", cJSON_CreateArray());
    cJSON *responses = cJSON_AddObjectToObject(op, "responses");
    cJSON *r = cJSON_AddObjectToObject(responses, "200");
    cJSON_AddStringToObject(r, "description", "OK");
    cJSON *content = cJSON_AddObjectToObject(r, "content");
    cJSON_AddObjectToObject(content, ctype);
}

char *gw_openapi_build(const bus_schema_registry_t *reg, const char *schemas_dir, size_t *len) {
    externals_t ext = {.n = 0};
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "openapi", "3.1.0");
    cJSON *info = cJSON_AddObjectToObject(doc, "info");
    cJSON_AddStringToObject(info, "title", "bus HTTP edge");
    cJSON_AddStringToObject(info, "version", BUS_VERSION);
    cJSON_AddStringToObject(info, "description",
                            "RPC methods and event types of the bus platform, generated from schemas/. "
                            "Every response carries X-Request-Id; errors carry request_id in the body.");
    cJSON *comp = cJSON_AddObjectToObject(doc, "components");
    cJSON *schemas = cJSON_AddObjectToObject(comp, "schemas");
    cJSON *sec = cJSON_AddObjectToObject(comp, "securitySchemes");
    cJSON *k = cJSON_AddObjectToObject(sec, "ApiKey");
    cJSON_AddStringToObject(k, "type", "apiKey");
    cJSON_AddStringToObject(k, "in", "header");
    cJSON_AddStringToObject(k, "name", "X-API-Key");
    cJSON *security = cJSON_AddArrayToObject(doc, "security");
    cJSON *req = cJSON_CreateObject();
    cJSON_AddItemToObject(req, "ApiKey", cJSON_CreateArray());
    cJSON_AddItemToArray(security, req);

    cJSON *err = cJSON_Parse("{\"type\":\"object\",\"required\":[\"success\",\"error\",\"message\",\"status_code\"],"
                             "\"properties\":{\"success\":{\"const\":false},\"error\":{\"type\":\"string\",\"enum\":"
                             "[\"bad_request\",\"unauthorized\",\"permission_denied\",\"not_found\",\"conflict\","
                             "\"invalid\",\"rate_limited\",\"internal\",\"unavailable\",\"timeout\"]},"
                             "\"message\":{\"type\":\"string\"},\"status_code\":{\"type\":\"integer\"},"
                             "\"request_id\":{\"type\":\"string\"}}}");
    cJSON_AddItemToObject(schemas, "Error", err);

    cJSON *paths = cJSON_AddObjectToObject(doc, "paths");
    add_get(paths, "/", "platform information", "application/json");
    add_get(paths, "/api/v1/health", "health of the edge (broker, Redis)", "application/json");
    add_get(paths, "/api/v1/health/services", "per domain: live instances, backlogs, dead letters",
            "application/json");
    add_get(paths, "/api/v1/services/{name}/status", "a service's ping reply", "application/json");
    add_get(paths, "/api/v1/openapi.json", "this document", "application/json");
    add_get(paths, "/api/docs", "this document as a page for people (HTML)", "text/html");
    add_get(paths, "/metrics", "Prometheus metrics", "text/plain");

    size_t nm = reg ? bus_schema_registry_method_count(reg) : 0;
    for (size_t i = 0; i < nm; i++) {
        const char *service = NULL, *method = NULL;
        const bus_schema_t *params = NULL, *result = NULL;
        const cJSON *file = NULL;
        if (bus_schema_registry_method_at(reg, i, &service, &method, &params, &result, &file) != 0) continue;
        char name[160], path[200];
        snprintf(name, sizeof name, "%s.%s", service, method);
        snprintf(path, sizeof path, "/api/v1/rpc/%s/%s", service, method);
        cJSON *copy = file ? cJSON_Duplicate(file, 1) : cJSON_CreateObject();
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "$schema");
        rebase_refs(copy, name, &ext);
        cJSON_AddItemToObject(schemas, name, copy);
        cJSON *item = cJSON_AddObjectToObject(paths, path);
        cJSON *op = cJSON_AddObjectToObject(item, "post");
        cJSON_AddStringToObject(op, "operationId", name);
        const cJSON *desc = file ? cJSON_GetObjectItemCaseSensitive(file, "description") : NULL;
        if (!cJSON_IsString(desc)) desc = file ? cJSON_GetObjectItemCaseSensitive(file, "title") : NULL;
        cJSON_AddStringToObject(op, "summary", cJSON_IsString(desc) ? desc->valuestring : name);
        cJSON *tags = cJSON_AddArrayToObject(op, "tags");
        cJSON_AddItemToArray(tags, cJSON_CreateString(service));
        cJSON *body = cJSON_AddObjectToObject(op, "requestBody");
        cJSON_AddBoolToObject(body, "required", 0);
        cJSON_AddItemToObject(body, "content", json_content(params ? ref_to(name, "/definitions/params")
                                                                   : cJSON_CreateObject()));
        cJSON *responses = cJSON_AddObjectToObject(op, "responses");
        add_response(responses, "200", "the method's result",
                     success_schema(result ? ref_to(name, "/definitions/result") : NULL));
        add_errors(responses, 1);
    }
    size_t ne = reg ? bus_schema_registry_event_count(reg) : 0;
    for (size_t i = 0; i < ne; i++) {
        const bus_schema_t *schema = NULL;
        const char *type = bus_schema_registry_event_at(reg, i, &schema);
        if (!type) continue;
        char name[300], path[320];
        snprintf(name, sizeof name, "event.%s", type);
        snprintf(path, sizeof path, "/api/v1/events/%s", type);
        cJSON *copy = schema ? cJSON_Duplicate(bus_schema_json(schema), 1) : cJSON_CreateObject();
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "$schema");
        rebase_refs(copy, name, &ext);
        cJSON_AddItemToObject(schemas, name, copy);
        cJSON *item = cJSON_AddObjectToObject(paths, path);
        cJSON *op = cJSON_AddObjectToObject(item, "post");
        cJSON_AddStringToObject(op, "operationId", name);
        char summary[360];
        snprintf(summary, sizeof summary, "publish a %s event (202 once the broker confirmed it)", type);
        cJSON_AddStringToObject(op, "summary", summary);
        cJSON *tags = cJSON_AddArrayToObject(op, "tags");
        cJSON_AddItemToArray(tags, cJSON_CreateString("events"));
        cJSON *body = cJSON_AddObjectToObject(op, "requestBody");
        cJSON_AddBoolToObject(body, "required", 1);
        cJSON *content = json_content(ref_to(name, NULL));
        /* a whole structured-mode CloudEvent whose data is that schema */
        cJSON *ce = cJSON_AddObjectToObject(content, "application/cloudevents+json");
        cJSON *ces = cJSON_AddObjectToObject(ce, "schema");
        cJSON_AddStringToObject(ces, "type", "object");
        cJSON *reqd = cJSON_AddArrayToObject(ces, "required");
        const char *req_names[] = {"specversion", "id", "source", "type"};
        for (int j = 0; j < 4; j++) cJSON_AddItemToArray(reqd, cJSON_CreateString(req_names[j]));
        cJSON *props = cJSON_AddObjectToObject(ces, "properties");
        cJSON *tp = cJSON_AddObjectToObject(props, "type");
        cJSON_AddStringToObject(tp, "const", type);
        cJSON_AddItemToObject(props, "data", ref_to(name, NULL));
        cJSON_AddItemToObject(body, "content", content);
        cJSON *responses = cJSON_AddObjectToObject(op, "responses");
        cJSON *idschema = cJSON_Parse("{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"}}}");
        add_response(responses, "202", "published and confirmed by the broker", success_schema(idschema));
        add_errors(responses, 1);
    }
    if (schemas_dir) add_externals(schemas, &ext, schemas_dir);
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (s && len) *len = strlen(s);
    return s;
}

void gw_openapi(gw_req_t *r) {
    gw_t *gw = r->gw;
    if (!gw->openapi) {
        gw_fail(r, 500, "the OpenAPI document could not be built");
        return;
    }
    gw_finish(r, 200, "application/json", gw->openapi, gw->openapi_len);
}
