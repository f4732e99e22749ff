/*
 * probe.c: prints, as one JSON object, the byte offsets and sizes of every nginx structure field that
 * resty.ticketkeys (nginx/lib/resty/ticketkeys.lua) reads or writes, as the C compiler lays them out
 * from the headers of one configured nginx tree (its src/ and objs/ include directories).
 *
 * The Go driver (layoutprobe.go) compiles it with -I for that tree and with -D for the names that
 * differ between nginx versions, which it finds first by compiling small checks against the same
 * headers (never by version number):
 *   TK_KEY_T             the ticket-key element: ngx_ssl_ticket_key_t or ngx_ssl_session_ticket_key_t
 *   TK_KEY_HAS_BITFIELD  1 when the element has the `size:8, shared:1` bitfield (and `expire`)
 *   TK_HTTP_SSL_ENABLE   1 when ngx_http_ssl_srv_conf_t has the `enable` flag
 *   TK_STREAM_SSL_T      ngx_stream_ssl_srv_conf_t or ngx_stream_ssl_conf_t (absent: no stream)
 *   TK_INDEX_SYM         the SSL_CTX ex_data index of the key array
 *
 * Bitfields have no offsetof: their byte and bit are found by setting each field in a zeroed element
 * and looking at which byte changed.
 */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#ifdef TK_STREAM_SSL_T
#include <ngx_stream.h>
#endif
#include <stdio.h>
#include <string.h>

#define TK_STR2(x) #x
#define TK_STR(x) TK_STR2(x)

#ifdef TK_KEY_HAS_BITFIELD
/* first_set returns the index of the first non-zero byte of an element, and its value in *value. */
static int
first_set(const TK_KEY_T *k, int *value)
{
    const unsigned char *p = (const unsigned char *) k;
    size_t i;

    for (i = 0; i < sizeof(*k); i++) {
        if (p[i] != 0) {
            *value = p[i];
            return (int) i;
        }
    }
    *value = 0;
    return -1;
}
#endif

int
main(void)
{
    /* Referencing the symbol proves the header declares it (a check at compile time, no link). */
    (void) sizeof(TK_INDEX_SYM);

    printf("{\n");
    printf("  \"nginx_version\": %d,\n", (int) nginx_version);
    printf("  \"nginx_version_string\": \"%s\",\n", NGINX_VERSION);
    printf("  \"pointer_size\": %d,\n", (int) sizeof(void *));
    printf("  \"cycle_conf_ctx\": %d,\n", (int) offsetof(ngx_cycle_t, conf_ctx));
    printf("  \"module\": {\"ctx_index\": %d, \"index\": %d, \"version\": %d},\n",
           (int) offsetof(ngx_module_t, ctx_index), (int) offsetof(ngx_module_t, index),
           (int) offsetof(ngx_module_t, version));
    printf("  \"array\": {\"elts\": %d, \"nelts\": %d, \"size\": %d, \"nalloc\": %d, \"sizeof\": %d},\n",
           (int) offsetof(ngx_array_t, elts), (int) offsetof(ngx_array_t, nelts),
           (int) offsetof(ngx_array_t, size), (int) offsetof(ngx_array_t, nalloc),
           (int) sizeof(ngx_array_t));
    printf("  \"ssl\": {\"ctx\": %d, \"log\": %d},\n",
           (int) offsetof(ngx_ssl_t, ctx), (int) offsetof(ngx_ssl_t, log));

    printf("  \"http\": {\"conf_ctx_main_conf\": %d, \"conf_ctx_srv_conf\": %d, "
           "\"core_main_servers\": %d, \"core_srv_ctx\": %d, \"core_srv_file_name\": %d, "
           "\"core_srv_line\": %d, ",
           (int) offsetof(ngx_http_conf_ctx_t, main_conf), (int) offsetof(ngx_http_conf_ctx_t, srv_conf),
           (int) offsetof(ngx_http_core_main_conf_t, servers),
           (int) offsetof(ngx_http_core_srv_conf_t, ctx),
           (int) offsetof(ngx_http_core_srv_conf_t, file_name),
           (int) offsetof(ngx_http_core_srv_conf_t, line));
#if TK_HTTP_SSL_ENABLE
    printf("\"ssl_enable\": %d, ", (int) offsetof(ngx_http_ssl_srv_conf_t, enable));
#else
    printf("\"ssl_enable\": null, ");
#endif
    printf("\"ssl_ctx\": %d},\n",
           (int) (offsetof(ngx_http_ssl_srv_conf_t, ssl) + offsetof(ngx_ssl_t, ctx)));

#ifdef TK_STREAM_SSL_T
    printf("  \"stream\": {\"conf_ctx_main_conf\": %d, \"conf_ctx_srv_conf\": %d, "
           "\"core_main_servers\": %d, \"core_srv_ctx\": %d, \"core_srv_file_name\": %d, "
           "\"core_srv_line\": %d, \"ssl_conf_type\": \"%s\", \"ssl_ctx\": %d},\n",
           (int) offsetof(ngx_stream_conf_ctx_t, main_conf),
           (int) offsetof(ngx_stream_conf_ctx_t, srv_conf),
           (int) offsetof(ngx_stream_core_main_conf_t, servers),
           (int) offsetof(ngx_stream_core_srv_conf_t, ctx),
           (int) offsetof(ngx_stream_core_srv_conf_t, file_name),
           (int) offsetof(ngx_stream_core_srv_conf_t, line),
           TK_STR(TK_STREAM_SSL_T),
           (int) (offsetof(TK_STREAM_SSL_T, ssl) + offsetof(ngx_ssl_t, ctx)));
#else
    printf("  \"stream\": null,\n");
#endif

    printf("  \"key\": {\"type\": \"%s\", \"sizeof\": %d, \"name\": %d, \"hmac_key\": %d, \"aes_key\": %d, ",
           TK_STR(TK_KEY_T), (int) sizeof(TK_KEY_T), (int) offsetof(TK_KEY_T, name),
           (int) offsetof(TK_KEY_T, hmac_key), (int) offsetof(TK_KEY_T, aes_key));
#ifdef TK_KEY_HAS_BITFIELD
    {
        TK_KEY_T k;
        int size_byte, size_value, shared_byte, shared_mask;

        memset(&k, 0, sizeof(k));
        k.size = 0xff;
        size_byte = first_set(&k, &size_value);
        memset(&k, 0, sizeof(k));
        k.shared = 1;
        shared_byte = first_set(&k, &shared_mask);
        /* size:8 must fill exactly one byte for a byte read to be the field. */
        if (size_value != 0xff) {
            size_byte = -1;
        }
        printf("\"expire\": %d, \"expire_size\": %d, \"size_field\": null, \"size_byte\": %d, "
               "\"shared_byte\": %d, \"shared_mask\": %d},\n",
               (int) offsetof(TK_KEY_T, expire), (int) sizeof(k.expire), size_byte, shared_byte,
               shared_mask);
    }
#else
    printf("\"expire\": null, \"expire_size\": null, \"size_field\": %d, \"size_byte\": null, "
           "\"shared_byte\": null, \"shared_mask\": null},\n",
           (int) offsetof(TK_KEY_T, size));
#endif
    printf("  \"index_symbol\": \"%s\"\n", TK_STR(TK_INDEX_SYM));
    printf("}\n");
    return 0;
}
