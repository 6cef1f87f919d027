/* GET /api/docs: the API documentation for people, one static HTML page
 * built once at start from the OpenAPI document of openapi.c (so both
 * always say the same): every operation with its summary, its request
 * schema and an example body made from that schema. No external assets:
 * the style is inline, and a small inline script (the page reads fine
 * without it) builds the table of contents and counts the operations
 * (body data-operations), which the browser test reads back. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sb_t;

static void sb_add(sb_t *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sb_t *b, const char *s) { sb_add(b, s, strlen(s)); }

/* text for HTML content and attribute values */
static void sb_esc(sb_t *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': sb_str(b, "&lt;"); break;
        case '>': sb_str(b, "&gt;"); break;
        case '&': sb_str(b, "&amp;"); break;
        case '"': sb_str(b, "&quot;"); break;
        case '\'': sb_str(b, "&#39;"); break;
        default: sb_add(b, s, 1);
        }
    }
}

/* The node a local "$ref" ("#/components/schemas/x/definitions/y") names. */
static const cJSON *resolve(const cJSON *doc, const char *ref) {
    if (!ref || ref[0] != '#') return NULL;
    const cJSON *node = doc;
    const char *p = ref + 1;
    while (node && *p == '/') {
        p++;
        size_t n = strcspn(p, "/");
        char key[200];
        if (n >= sizeof key) return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        node = cJSON_GetObjectItemCaseSensitive(node, key);
        p += n;
    }
    return *p ? NULL : node;
}

static const cJSON *deref(const cJSON *doc, const cJSON *s) {
    for (int i = 0; i < 16 && s; i++) {
        const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
        if (!cJSON_IsString(ref)) return s;
        s = resolve(doc, ref->valuestring);
    }
    return s;
}

/* An example instance of schema s: its own example, default, const or
 * first enum value when it has one, else one made from its type. */
static cJSON *example(const cJSON *doc, const cJSON *s, int depth) {
    s = deref(doc, s);
    if (!cJSON_IsObject(s) || depth > 8) return cJSON_CreateNull();
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, "examples");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) return cJSON_Duplicate(cJSON_GetArrayItem(v, 0), 1);
    const char *own[] = {"example", "default", "const"};
    for (int i = 0; i < 3; i++)
        if ((v = cJSON_GetObjectItemCaseSensitive(s, own[i]))) return cJSON_Duplicate(v, 1);
    v = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) return cJSON_Duplicate(cJSON_GetArrayItem(v, 0), 1);
    const char *combos[] = {"allOf", "oneOf", "anyOf"};
    for (int i = 0; i < 3; i++) {
        v = cJSON_GetObjectItemCaseSensitive(s, combos[i]);
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) return example(doc, cJSON_GetArrayItem(v, 0), depth + 1);
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : NULL;
    if (cJSON_IsArray(t)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, t) if (cJSON_IsString(it) && strcmp(it->valuestring, "null") != 0) {
            type = it->valuestring;
            break;
        }
    }
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    if (!type) type = props ? "object" : "null";
    if (strcmp(type, "object") == 0) {
        cJSON *o = cJSON_CreateObject();
        const cJSON *p;
        cJSON_ArrayForEach(p, props) cJSON_AddItemToObject(o, p->string, example(doc, p, depth + 1));
        return o;
    }
    if (strcmp(type, "array") == 0) {
        cJSON *a = cJSON_CreateArray();
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        if (items) cJSON_AddItemToArray(a, example(doc, items, depth + 1));
        return a;
    }
    if (strcmp(type, "integer") == 0 || strcmp(type, "number") == 0) {
        const cJSON *min = cJSON_GetObjectItemCaseSensitive(s, "minimum");
        double x = cJSON_IsNumber(min) ? min->valuedouble : 1;
        return cJSON_CreateNumber(x);
    }
    if (strcmp(type, "boolean") == 0) return cJSON_CreateTrue();
    if (strcmp(type, "string") == 0) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(s, "format");
        const char *fmt = cJSON_IsString(f) ? f->valuestring : "";
        if (strcmp(fmt, "date-time") == 0) return cJSON_CreateString("2026-01-01T12:00:00Z");
        if (strcmp(fmt, "uuid") == 0) return cJSON_CreateString("0f8fad5b-d9cb-469f-a165-70867728950e");
        const cJSON *minl = cJSON_GetObjectItemCaseSensitive(s, "minLength");
        const cJSON *maxl = cJSON_GetObjectItemCaseSensitive(s, "maxLength");
        char text[64] = "example";
        size_t want = cJSON_IsNumber(minl) && minl->valuedouble > 7 ? (size_t)minl->valuedouble : 7;
        if (want > sizeof text - 1) want = sizeof text - 1;
        for (size_t i = 7; i < want; i++) text[i] = 'x';
        text[want] = '\0';
        if (cJSON_IsNumber(maxl) && maxl->valuedouble >= 1 && (size_t)maxl->valuedouble < strlen(text))
            text[(size_t)maxl->valuedouble] = '\0';
        return cJSON_CreateString(text);
    }
    return cJSON_CreateNull();
}

static void sb_json(sb_t *b, const cJSON *v) {
    char *s = v ? cJSON_Print(v) : NULL;
    sb_str(b, "<pre>");
    sb_esc(b, s ? s : "(none)");
    sb_str(b, "</pre>\n");
    free(s);
}

static void operation(sb_t *b, const cJSON *doc, const char *path, const char *method, const cJSON *op) {
    const cJSON *summary = cJSON_GetObjectItemCaseSensitive(op, "summary");
    char upper[8];
    size_t i = 0;
    for (; method[i] && i < sizeof upper - 1; i++) upper[i] = (char)(method[i] >= 'a' && method[i] <= 'z' ? method[i] - 32 : method[i]);
    upper[i] = '\0';
    sb_str(b, "<section class=\"op\" id=\"");
    sb_esc(b, upper);
    sb_esc(b, path);
    sb_str(b, "\">\n<h3><span class=\"verb\">");
    sb_esc(b, upper);
    sb_str(b, "</span> <code>");
    sb_esc(b, path);
    sb_str(b, "</code></h3>\n<p>");
    sb_esc(b, cJSON_IsString(summary) ? summary->valuestring : "");
    sb_str(b, "</p>\n");
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(op, "requestBody");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(body, "content");
    const cJSON *json = cJSON_GetObjectItemCaseSensitive(content, "application/json");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(json, "schema");
    if (!schema) {
        sb_str(b, "<p class=\"nobody\">No request body.</p>\n");
    } else {
        sb_str(b, "<h4>Request body schema (application/json)</h4>\n");
        sb_json(b, deref(doc, schema));
        cJSON *ex = example(doc, schema, 0);
        sb_str(b, "<h4>Example</h4>\n");
        sb_json(b, ex);
        cJSON_Delete(ex);
    }
    const cJSON *responses = cJSON_GetObjectItemCaseSensitive(op, "responses");
    if (cJSON_IsObject(responses)) {
        sb_str(b, "<h4>Answers</h4>\n<ul>\n");
        const cJSON *r;
        cJSON_ArrayForEach(r, responses) {
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(r, "description");
            sb_str(b, "<li><b>");
            sb_esc(b, r->string);
            sb_str(b, "</b> ");
            sb_esc(b, cJSON_IsString(d) ? d->valuestring : "");
            sb_str(b, "</li>\n");
        }
        sb_str(b, "</ul>\n");
    }
    sb_str(b, "</section>\n");
}

char *gw_docs_build(const char *openapi, size_t *len) {
    cJSON *doc = openapi ? cJSON_Parse(openapi) : NULL;
    if (!doc) return NULL;
    sb_t b = {0};
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(doc, "info");
    const cJSON *title = cJSON_GetObjectItemCaseSensitive(info, "title");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(info, "description");
    sb_str(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>");
    sb_esc(&b, cJSON_IsString(title) ? title->valuestring : "API");
    sb_str(&b, "</title>\n<style>\n"
               "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\n"
               "section.op{border-top:1px solid #ccc;padding:.5rem 0}\n"
               ".verb{font-weight:bold;color:#fff;background:#2a6;padding:.1rem .4rem;border-radius:.2rem}\n"
               "pre{background:#f4f4f4;padding:.6rem;overflow:auto;font-size:.85rem}\n"
               "nav li{font-family:monospace}\n"
               "</style></head>\n<body>\n<h1>");
    sb_esc(&b, cJSON_IsString(title) ? title->valuestring : "API");
    sb_str(&b, "</h1>\n<p>");
    sb_esc(&b, cJSON_IsString(desc) ? desc->valuestring : "");
    sb_str(&b, "</p>\n<p>The same API as a machine-readable document: <a href=\"/api/v1/openapi.json\">"
               "/api/v1/openapi.json</a>. Errors answer {\"success\":false,\"error\":CODE,\"message\":...,"
               "\"status_code\":N,\"request_id\":...}.</p>\n<nav><h2>Operations</h2><ul id=\"toc\"></ul></nav>\n"
               "<h2>Reference</h2>\n");
    const cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
    const cJSON *item;
    cJSON_ArrayForEach(item, paths) {
        const cJSON *op;
        cJSON_ArrayForEach(op, item) if (cJSON_IsObject(op)) operation(&b, doc, item->string, op->string, op);
    }
    sb_str(&b, "<script>\n(function(){var ops=document.querySelectorAll('section.op'),toc=document.getElementById('toc');\n"
               "for(var i=0;i<ops.length;i++){var li=document.createElement('li'),a=document.createElement('a');\n"
               "a.href='#'+ops[i].id;a.textContent=ops[i].querySelector('h3').textContent;li.appendChild(a);"
               "toc.appendChild(li);}\n"
               "document.body.setAttribute('data-operations',String(ops.length));})();\n</script>\n</body></html>\n");
    cJSON_Delete(doc);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}

void gw_docs(gw_req_t *r) {
    gw_t *gw = r->gw;
    if (!gw->docs) {
        gw_fail(r, 500, "the API documentation could not be built");
        return;
    }
    gw_finish(r, 200, "text/html; charset=utf-8", gw->docs, gw->docs_len);
}
