/* A report as one self-contained HTML page (ws_report_to_html): the model as a grid of layers
 * x kinds of tensor, each cell coloured by its verdict, the findings listed under the grid. No
 * script and no network: inline CSS only, so the page opens anywhere, offline. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing string; a failed allocation sticks (ok = false) and later appends do nothing. */
typedef struct buf {
    char *s;
    size_t len, cap;
    bool ok;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if (!b->ok) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 8192;
        while (cap < b->len + n + 1) cap *= 2;
        char *g = realloc(b->s, cap);
        if (!g) {
            b->ok = false;
            return;
        }
        b->s = g;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static void putf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(buf *b, const char *fmt, ...) {
    char tmp[512], *big = NULL;
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= sizeof tmp && (big = malloc((size_t)n + 1)))
        vsnprintf(big, (size_t)n + 1, fmt, again); /* never cut: a cut tag breaks the page */
    va_end(again);
    if (n < 0 || ((size_t)n >= sizeof tmp && !big)) {
        b->ok = false;
        return;
    }
    put(b, big ? big : tmp, (size_t)n);
    free(big);
}

/* Text with <, >, &, " escaped. */
static void esc(buf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': puts_(b, "&lt;"); break;
        case '>': puts_(b, "&gt;"); break;
        case '&': puts_(b, "&amp;"); break;
        case '"': puts_(b, "&quot;"); break;
        default: put(b, s, 1);
        }
    }
}

/* The grid's columns, in order. A HF name goes to the first kind whose pattern it holds. */
static const struct {
    const char *kind, *pattern;
} kinds[] = {
    {"experts", ".experts."},   {"router", ".mlp.gate."},  {"q", "q_proj"},
    {"k", "k_proj"},            {"v", "v_proj"},           {"o", "o_proj"},
    {"gate", "gate_proj"},      {"up", "up_proj"},         {"down", "down_proj"},
    {"norms", "norm"},          {"embed", "embed_tokens"}, {"lm_head", "lm_head"},
    {"other", ""},
};
enum { NKINDS = sizeof kinds / sizeof kinds[0] };

static int kind_of(const char *name) {
    for (int k = 0; k < NKINDS; k++)
        if (strstr(name, kinds[k].pattern)) return k;
    return NKINDS - 1;
}

/* Layer index of "....layers.N....", or -1 for a tensor outside the layers. */
static long layer_of(const char *name) {
    const char *p = strstr(name, "layers.");
    if (!p) return -1;
    char *end;
    long n = strtol(p + 7, &end, 10);
    return end != p + 7 && *end == '.' && n >= 0 && n < 1000000 ? n : -1;
}

/* Verdict order: a cell shows the worst of its tensors. */
enum { V_NONE, V_OK, V_MISSING, V_BAD };
static const char *const verdict_class[] = {"none", "ok", "missing", "bad"};

static int verdict_of(ws_status s) {
    switch (s) {
    case WS_MATCH: return V_OK;
    case WS_MISSING:
    case WS_UNEXPECTED:
    case WS_NOT_COMPARABLE: return V_MISSING;
    default: return V_BAD;
    }
}

typedef struct cell {
    int verdict;
    unsigned tensors, findings;
} cell;

/* Row of a layer in the grid: row 0 holds the tensors outside the layers. */
static size_t row_of(long layer) { return layer < 0 ? 0 : (size_t)layer + 1; }

static void note(cell *grid, size_t row, int kind, int verdict, bool is_tensor, bool is_finding) {
    cell *c = &grid[row * NKINDS + (size_t)kind];
    if (verdict > c->verdict) c->verdict = verdict;
    c->tensors += is_tensor;
    c->findings += is_finding;
}

static void cell_id(buf *b, size_t row, int kind) {
    if (row == 0) putf(b, "cell-model-%s", kinds[kind].kind);
    else putf(b, "cell-L%zu-%s", row - 1, kinds[kind].kind);
}

static const char style[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}"
    "h1{font-size:20px}h2{font-size:16px;margin-top:2em}"
    ".verdict{font-weight:bold;padding:.2em .6em;border-radius:4px;color:#fff}"
    ".verdict.ok{background:#2e7d32}.verdict.bad{background:#c62828}"
    "table.grid{border-collapse:collapse}"
    ".grid th{font-weight:normal;color:#555;padding:2px 6px}"
    ".grid td{width:3.2em;height:1.6em;text-align:center;border:1px solid #fff;font-size:12px}"
    ".grid td.ok{background:rgb(67,160,71);color:#fff}"
    ".grid td.bad{background:rgb(229,57,53);color:#fff;font-weight:bold}"
    ".grid td.missing{background:rgb(251,140,0);color:#fff}"
    ".grid td.none{background:#eee}"
    ".grid td a{color:inherit;text-decoration:none;display:block}"
    ".legend span{display:inline-block;padding:0 .5em;margin-right:.5em;color:#fff}"
    "table.findings{border-collapse:collapse;margin-top:.5em}"
    ".findings td,.findings th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;"
    "vertical-align:top}"
    ".findings td.detail{font-family:monospace;font-size:12px;max-width:60em;"
    "word-break:break-all}"
    ".status-bad{color:#c62828;font-weight:bold}.status-missing{color:#e65100;font-weight:bold}";

static void finding_row(buf *b, const ws_finding *f) {
    int v = verdict_of(f->status);
    putf(b, "<tr class=\"finding\" data-status=\"%s\"><td class=\"status-%s\">%s</td><td>",
         ws_status_name(f->status), verdict_class[v], ws_status_name(f->status));
    esc(b, f->tensor[0] ? f->tensor : "(dump)");
    puts_(b, "</td><td>");
    if (f->local) esc(b, f->local);
    else if (f->nholders) esc(b, f->holders[0].local);
    puts_(b, "</td><td class=\"rank\">");
    if (f->rank >= 0) putf(b, "%d", f->rank);
    else
        for (size_t k = 0; k < f->nholders; k++) {
            bool seen = false;
            for (size_t j = 0; j < k; j++) seen |= f->holders[j].rank == f->holders[k].rank;
            if (!seen) putf(b, "%s%d", k ? ", " : "", f->holders[k].rank);
        }
    puts_(b, "</td><td class=\"rows\">");
    if (f->row0 >= 0) putf(b, "%lld..%lld", (long long)f->row0, (long long)f->row1);
    else
        for (size_t k = 0; k < f->nholders; k++)
            putf(b, "%s%lld..%lld (rank %d)", k ? "; " : "", (long long)f->holders[k].row0,
                 (long long)f->holders[k].row1, f->holders[k].rank);
    puts_(b, "</td><td class=\"detail\">");
    esc(b, f->detail);
    puts_(b, "</td></tr>\n");
}

static const char findings_head[] =
    "<table class=\"findings\"><tr><th>status</th><th>HF tensor</th><th>engine tensor</th>"
    "<th>rank</th><th>rows</th><th>detail</th></tr>\n";

ws_err ws_report_to_html(const ws_report *r, const ws_manifest *expected, const char *title,
                         char **out, ws_error *err) {
    if (!r || !out) return wsi_fail(err, WS_ERR_ARG, NULL, NULL, -1, "NULL argument");
    *out = NULL;
    /* rows: 0 = outside the layers, 1 + n = layer n */
    size_t rows = 1;
    for (size_t i = 0; expected && i < ws_manifest_count(expected); i++) {
        long l = layer_of(ws_manifest_entry_at(expected, i)->name);
        if (l >= 0 && (size_t)l + 2 > rows) rows = (size_t)l + 2;
    }
    for (size_t i = 0; i < ws_report_count(r); i++) {
        long l = layer_of(ws_report_at(r, i)->tensor);
        if (l >= 0 && (size_t)l + 2 > rows) rows = (size_t)l + 2;
    }
    cell *grid = calloc(rows * NKINDS, sizeof *grid);
    if (!grid) return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    bool used[NKINDS] = {0};
    for (size_t i = 0; expected && i < ws_manifest_count(expected); i++) {
        const char *name = ws_manifest_entry_at(expected, i)->name;
        int k = kind_of(name);
        used[k] = true;
        note(grid, row_of(layer_of(name)), k, V_OK, true, false);
    }
    size_t dump_findings = 0;
    for (size_t i = 0; i < ws_report_count(r); i++) {
        const ws_finding *f = ws_report_at(r, i);
        if (!f->tensor[0]) {
            dump_findings++;
            continue;
        }
        int k = kind_of(f->tensor);
        used[k] = true;
        note(grid, row_of(layer_of(f->tensor)), k, verdict_of(f->status), false, true);
    }
    buf b = {.ok = true};
    puts_(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>");
    esc(&b, title ? title : "weightsum report");
    puts_(&b, "</title>\n<style>");
    puts_(&b, style);
    puts_(&b, "</style></head>\n<body>\n<h1>");
    esc(&b, title ? title : "weightsum report");
    putf(&b, "</h1>\n<p><span class=\"verdict %s\" id=\"verdict\">%s</span> %llu matched, %zu "
             "finding%s</p>\n",
         ws_report_ok(r) ? "ok" : "bad", ws_report_ok(r) ? "OK" : "FAILED",
         (unsigned long long)ws_report_matched(r), ws_report_count(r),
         ws_report_count(r) == 1 ? "" : "s");
    puts_(&b, "<p class=\"legend\"><span style=\"background:rgb(67,160,71)\">match</span>"
              "<span style=\"background:rgb(229,57,53)\">mismatch, replica, padding, shape, "
              "coverage</span><span style=\"background:rgb(251,140,0)\">missing, unexpected"
              "</span></p>\n<table class=\"grid\" id=\"grid\">\n<tr><th></th>");
    for (int k = 0; k < NKINDS; k++)
        if (used[k]) putf(&b, "<th>%s</th>", kinds[k].kind);
    puts_(&b, "</tr>\n");
    for (size_t row = 0; row < rows; row++) {
        bool any = false;
        for (int k = 0; k < NKINDS; k++) any |= grid[row * NKINDS + k].verdict != V_NONE;
        if (row == 0 && !any) continue; /* no tensor outside the layers */
        if (row == 0) puts_(&b, "<tr><th>model</th>");
        else putf(&b, "<tr><th>layer %zu</th>", row - 1);
        for (int k = 0; k < NKINDS; k++) {
            if (!used[k]) continue;
            const cell *c = &grid[row * NKINDS + k];
            puts_(&b, "<td id=\"");
            cell_id(&b, row, k);
            putf(&b, "\" class=\"%s\" data-verdict=\"%s\" title=\"%u tensor%s, %u finding%s\">",
                 verdict_class[c->verdict], verdict_class[c->verdict], c->tensors,
                 c->tensors == 1 ? "" : "s", c->findings, c->findings == 1 ? "" : "s");
            if (c->findings) {
                puts_(&b, "<a href=\"#");
                putf(&b, "f-");
                cell_id(&b, row, k);
                putf(&b, "\">%u</a>", c->findings);
            } else if (c->verdict == V_OK) {
                puts_(&b, "&#10003;");
            }
            puts_(&b, "</td>");
        }
        puts_(&b, "</tr>\n");
    }
    puts_(&b, "</table>\n");
    if (ws_report_count(r)) puts_(&b, "<h2>Findings</h2>\n");
    if (dump_findings) {
        puts_(&b, "<h3 id=\"f-dump\">the dump</h3>\n");
        puts_(&b, findings_head);
        for (size_t i = 0; i < ws_report_count(r); i++)
            if (!ws_report_at(r, i)->tensor[0]) finding_row(&b, ws_report_at(r, i));
        puts_(&b, "</table>\n");
    }
    for (size_t row = 0; row < rows; row++)
        for (int k = 0; k < NKINDS; k++) {
            if (!grid[row * NKINDS + k].findings) continue;
            puts_(&b, "<h3 id=\"f-");
            cell_id(&b, row, k);
            if (row == 0) putf(&b, "\">%s</h3>\n", kinds[k].kind);
            else putf(&b, "\">layer %zu, %s</h3>\n", row - 1, kinds[k].kind);
            puts_(&b, findings_head);
            for (size_t i = 0; i < ws_report_count(r); i++) {
                const ws_finding *f = ws_report_at(r, i);
                if (f->tensor[0] && row_of(layer_of(f->tensor)) == row && kind_of(f->tensor) == k)
                    finding_row(&b, f);
            }
            puts_(&b, "</table>\n");
        }
    puts_(&b, "<p style=\"color:#777\">weightsum " WS_VERSION_STRING "</p>\n</body></html>\n");
    free(grid);
    if (!b.ok) {
        free(b.s);
        return wsi_fail(err, WS_ERR_NOMEM, NULL, NULL, -1, "out of memory");
    }
    *out = b.s;
    return WS_OK;
}
