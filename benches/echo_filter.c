/* The floor of git's long-running filter protocol: a filter that hands
 * every file back unchanged, with buffered pkt-line I/O and nothing else.
 * With `--delay` it also speaks the `delay` capability the way hoard does
 * for checkouts: every smudge git allows to delay is answered `delayed`,
 * `list_available_blobs` names them all, and git asks for each again.
 * benches/git.py builds it with gcc and times git through it beside git
 * without a filter and hoard, so the cost of the protocol itself is told
 * apart from hoard's own.
 *
 *     gcc -O2 -o echo-filter benches/echo_filter.c
 *     git config filter.echo.process "/path/to/echo-filter [--delay]"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char buf[65520 + 1];

/* Reads one pkt-line into buf: its payload length, 0 for a flush, -1 at
 * the end of input. */
static int pkt_read(void) {
    char h[5] = {0};
    if (fread(h, 1, 4, stdin) != 4) return -1;
    int n = (int)strtol(h, NULL, 16);
    if (n == 0) return 0;
    if (n < 4 || n > 65520) { fprintf(stderr, "echo-filter: bad pkt-line\n"); exit(1); }
    n -= 4;
    if (fread(buf, 1, n, stdin) != (size_t)n) exit(1);
    buf[n] = 0;
    return n;
}

static void pkt_write(const char *p, size_t n) {
    printf("%04zx", n + 4);
    fwrite(p, 1, n, stdout);
}
static void pkt_text(const char *s) { pkt_write(s, strlen(s)); }
static void flush_pkt(void) { fputs("0000", stdout); }

static void write_content(const char *p, size_t len) {
    for (size_t off = 0; off < len; off += 65516) {
        size_t k = len - off < 65516 ? len - off : 65516;
        pkt_write(p + off, k);
    }
}

/* Delayed files: path → content, open addressing. */
struct held { char *path; char *data; size_t len; int listed; };
static struct held *table;
static size_t slots, used;

static size_t slot_of(const char *path) {
    size_t h = 1469598103934665603u;
    for (const char *c = path; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211u;
    size_t i = h & (slots - 1);
    while (table[i].path && strcmp(table[i].path, path)) i = (i + 1) & (slots - 1);
    return i;
}

static void hold(const char *path, const char *data, size_t len) {
    if (2 * (used + 1) > slots) {
        struct held *old = table;
        size_t n = slots;
        slots = slots ? 2 * slots : 1024;
        table = calloc(slots, sizeof *table);
        for (size_t i = 0; i < n; i++)
            if (old[i].path) table[slot_of(old[i].path)] = old[i];
        free(old);
    }
    size_t i = slot_of(path);
    if (!table[i].path) used++;
    table[i].path = strdup(path);
    table[i].data = malloc(len ? len : 1);
    memcpy(table[i].data, data, len);
    table[i].len = len;
    table[i].listed = 0;
}

int main(int argc, char **argv) {
    int delay = argc > 1 && !strcmp(argv[1], "--delay");
    static char in[1 << 16], out[1 << 18];
    setvbuf(stdin, in, _IOFBF, sizeof in);
    setvbuf(stdout, out, _IOFBF, sizeof out);
    while (pkt_read() > 0) {} /* git-filter-client, version=2 */
    pkt_text("git-filter-server\n");
    pkt_text("version=2\n");
    flush_pkt();
    fflush(stdout);
    int git_delays = 0, n;
    while ((n = pkt_read()) > 0) git_delays |= !strcmp(buf, "capability=delay\n");
    delay &= git_delays;
    pkt_text("capability=clean\n");
    pkt_text("capability=smudge\n");
    if (delay) pkt_text("capability=delay\n");
    flush_pkt();
    fflush(stdout);
    static char *content, path[65536];
    static size_t cap, len;
    for (;;) {
        int any = 0, can_delay = 0, list = 0;
        path[0] = 0;
        while ((n = pkt_read()) > 0) {
            any = 1;
            if (!strncmp(buf, "pathname=", 9)) snprintf(path, sizeof path, "%s", buf + 9);
            can_delay |= !strcmp(buf, "can-delay=1\n");
            list |= !strcmp(buf, "command=list_available_blobs\n");
        }
        if (n < 0 || !any) return 0;
        if (list) {
            /* Everything delayed is available at once; an empty list
             * ends git's asking. */
            static char line[65536 + 16];
            for (size_t i = 0; i < slots; i++)
                if (table[i].path && !table[i].listed) {
                    table[i].listed = 1;
                    snprintf(line, sizeof line, "pathname=%s", table[i].path);
                    pkt_text(line);
                }
            flush_pkt();
            pkt_text("status=success\n");
            flush_pkt();
            fflush(stdout);
            continue;
        }
        len = 0;
        while ((n = pkt_read()) > 0) {
            if (len + n > cap) { cap = (len + n) * 2; content = realloc(content, cap); }
            memcpy(content + len, buf, n);
            len += n;
        }
        if (delay && can_delay) {
            hold(path, content, len);
            pkt_text("status=delayed\n");
            flush_pkt();
            fflush(stdout);
            continue;
        }
        const char *data = content;
        if (delay && slots) {
            size_t i = slot_of(path);
            if (table[i].path) { data = table[i].data; len = table[i].len; }
        }
        pkt_text("status=success\n");
        flush_pkt();
        write_content(data, len);
        flush_pkt();
        flush_pkt();
        fflush(stdout);
    }
}
