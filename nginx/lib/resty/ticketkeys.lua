-- resty.ticketkeys: installs a window of TLS session-ticket keys, rendered by Vault Agent from the
-- ticketkeys secrets engine (`ticketkeys/keys/:name`, format `nginx`), into the running nginx worker,
-- without a reload.
--
-- Usage (http{} context):
--
--     lua_package_path "/usr/local/share/ticketkeys/lua/?.lua;;";
--     init_worker_by_lua_block {
--         require("resty.ticketkeys").start{ file = "/var/lib/ticketkeys/nginx/web.window", shared_dict = "ticketkeys" }
--     }
--
-- The window file holds one standard base64 key per line (48 or 80 bytes decoded, all the same size),
-- the current (encrypting) key first, then the next keys, then the previous keys: exactly the `keys`
-- order of the engine's response. Every line, the last one included, ends with "\n".
--
-- How: nginx keeps the ticket keys of each TLS server block in an ngx_array_t attached to the block's
-- SSL_CTX, and its ticket callback encrypts with element 0 and decrypts with any element whose name
-- matches. The array exists only when at least one `ssl_session_ticket_key` directive applies to the
-- block; those placeholder directives also set its capacity. This module finds every http and stream
-- TLS server block through nginx's own configuration structures (LuaJIT FFI, no C module) and rewrites
-- the array of this worker. Each worker has its own copy, so the module runs in every worker: once
-- synchronously at worker start (before the worker accepts a connection), then from a timer whenever the
-- file's content changed.
--
-- Safety: the structures are read through layouts known per nginx version (1.21.4 to 1.31.1, each
-- compared by the tests with the offsets the C compiler gives for that nginx's headers, see
-- nginx/layoutprobe), on Linux x86_64 and arm64 (PLATFORMS; any other platform is refused by name at
-- start). A version outside that range is refused, never guessed; any layout guard that
-- fails (module version, element sizes, self-pointers, flag values, key sizes, counts) makes the module
-- write nothing and log why: nginx then keeps the keys it has. A block whose keys nginx manages itself
-- (1.23.2+: ssl_session_cache shared:... without ssl_session_ticket_key) is skipped with one warning
-- naming it by file and line. A bad window file (unreadable, empty, truncated, bad base64, wrong or
-- mixed sizes, duplicate names, too many keys) leaves the installed keys in place and logs one error
-- naming the rule. Key material never reaches a log line or the status output; key ids (hex of the
-- 16-byte key names, which every ticket carries in clear) do.
--
-- What it does not do: it cannot add a ticket callback to a server block without placeholders (nginx
-- installs its callback only for blocks with ssl_session_ticket_key), and it runs only where the http Lua
-- module runs (a worker of an nginx with an http{} block; stream TLS blocks of the same nginx are covered
-- from there). Decoded key bytes live in Lua strings until the garbage collector frees them; Lua cannot
-- zero them. Key arrays it had to enlarge (a window larger than the placeholder count) are allocated with
-- libc malloc and live until the worker exits.

local ffi = require "ffi"
local bit = require "bit"

local C = ffi.C
local ngx = ngx
local byte = string.byte
local concat = table.concat
local fmt = string.format
local tonumber = tonumber
local tostring = tostring
local type = type
local pcall = pcall

local _M = { _VERSION = "0.1.0" }

-- MAX_KEYS bounds a window: the engine never serves more than 256 keys (its key cap; rotation_period=1h
-- retain=24h alone makes 26), so every window it can serve installs, and a longer file is not a window.
local MAX_KEYS = 256
-- MAX_FILE_BYTES bounds the read: 256 timed lines of 80-byte keys are 256 * 170 bytes (108 base64
-- characters, three times of 20 characters, three spaces, the newline); twice that leaves room for
-- fractions of seconds and numeric time zones.
local MAX_FILE_BYTES = 128 * 1024
-- MAX_CAPACITY bounds nalloc as read from memory: placeholders are a handful of directives, so a huge
-- value means the array is not what the layout says it is.
local MAX_CAPACITY = 4096
-- DEFAULT_INTERVAL is how often (seconds) the file is checked for a change when start{} gets no interval.
local DEFAULT_INTERVAL = 1
-- A failure that lasts (unreadable or bad window file) is logged again at error level every
-- DEFAULT_ERROR_REPEAT seconds, so a node serving stale or placeholder keys never goes quiet.
local DEFAULT_ERROR_REPEAT = 60

local LOG_PREFIX = "ticketkeys: "

-- The FFI declarations use private type names and redirect private symbol names to nginx's and
-- libssl's symbols with __asm__, so they cannot clash with other FFI code in the same Lua VM.
local CDEF = [[
typedef struct {
    void       *elts;
    uintptr_t   nelts;
    size_t      size;
    uintptr_t   nalloc;
    void       *pool;
} tk_ngx_array_t;

typedef struct {
    uintptr_t   ctx_index;
    uintptr_t   index;
    char       *name;
    uintptr_t   spare0;
    uintptr_t   spare1;
    uintptr_t   version;
} tk_ngx_module_t;

typedef struct {
    void      ****conf_ctx;
} tk_ngx_cycle_t;

typedef struct {
    void      **main_conf;
    void      **srv_conf;
} tk_ngx_conf_ctx_t;

typedef struct {
    size_t      size;
    uint8_t     name[16];
    uint8_t     hmac_key[32];
    uint8_t     aes_key[32];
} tk_ngx_key_v1_t;

typedef struct {
    uint8_t     name[16];
    uint8_t     hmac_key[32];
    uint8_t     aes_key[32];
    int64_t     expire;
    unsigned    size:8;
    unsigned    shared:1;
} tk_ngx_key_v2_t;

extern tk_ngx_cycle_t *tk_ngx_cycle __asm__("ngx_cycle");
extern uintptr_t tk_ngx_max_module __asm__("ngx_max_module");
extern tk_ngx_module_t tk_ngx_http_module __asm__("ngx_http_module");
extern tk_ngx_module_t tk_ngx_http_core_module __asm__("ngx_http_core_module");
extern tk_ngx_module_t tk_ngx_http_ssl_module __asm__("ngx_http_ssl_module");
extern tk_ngx_module_t tk_ngx_stream_module __asm__("ngx_stream_module");
extern tk_ngx_module_t tk_ngx_stream_core_module __asm__("ngx_stream_core_module");
extern tk_ngx_module_t tk_ngx_stream_ssl_module __asm__("ngx_stream_ssl_module");
extern int tk_ngx_ssl_session_ticket_keys_index __asm__("ngx_ssl_session_ticket_keys_index");
extern int tk_ngx_ssl_ticket_keys_index __asm__("ngx_ssl_ticket_keys_index");

void *tk_SSL_CTX_get_ex_data(const void *ctx, int idx) __asm__("SSL_CTX_get_ex_data");
void *tk_malloc(size_t size) __asm__("malloc");
int tk_RAND_bytes(unsigned char *buf, int num) __asm__("RAND_bytes");
void tk_free(void *ptr) __asm__("free");
]]

do
    -- A second load of this file in the same VM (lua_code_cache off) finds the types already declared.
    local ok = pcall(ffi.typeof, "tk_ngx_array_t")
    if not ok then
        ffi.cdef(CDEF)
    end
end

local void_pp = ffi.typeof("void **")
local char_p = ffi.typeof("char *")
local uintptr_p = ffi.typeof("uintptr_t *")
local u8_p = ffi.typeof("uint8_t *")
local array_p = ffi.typeof("tk_ngx_array_t *")
local conf_ctx_p = ffi.typeof("tk_ngx_conf_ctx_t *")
local u8_cp = ffi.typeof("const uint8_t *")

-- KEY_TYPES describes nginx's in-memory ticket key element per struct generation.
--   v1 (< 1.23.2): ngx_ssl_session_ticket_key_t {size_t size; name[16]; hmac_key[32]; aes_key[32]}
--   v2 (>= 1.23.2): ngx_ssl_ticket_key_t {name[16]; hmac_key[32]; aes_key[32]; time_t expire;
--                   unsigned size:8, shared:1}
-- The v2 bitfield shares a 32-bit word with 23 bits nginx never initialises (pool memory): the module
-- reads and writes size:8 and shared:1 only as FFI bitfields, which LuaJIT extracts with integer shifts
-- before a value becomes a Lua number, so no uninitialised bit ever reaches a comparison (reading the
-- word, or even byte 89 with its 7 padding bits, as a number does; valgrind reports it). The byte and
-- bit of each field (bitfield_at) are compared with the C compiler's by the layout probe.
local function bitfield_at(ctype, field, value)
    local k = ffi.new(ctype)
    k[field] = value
    local b = ffi.cast("const uint8_t *", k)
    for i = 0, ffi.sizeof(ctype) - 1 do
        if b[i] ~= 0 then
            return i, b[i]
        end
    end
    return nil
end
local V2_SIZE_BYTE = bitfield_at("tk_ngx_key_v2_t", "size", 0xff)
local V2_SHARED_BYTE, V2_SHARED_MASK = bitfield_at("tk_ngx_key_v2_t", "shared", 1)

local KEY_TYPES = {
    v1 = {
        name = "v1",
        ptr = ffi.typeof("tk_ngx_key_v1_t *"),
        size = ffi.sizeof("tk_ngx_key_v1_t"),
        index_symbol = "tk_ngx_ssl_session_ticket_keys_index",
    },
    v2 = {
        name = "v2",
        ptr = ffi.typeof("tk_ngx_key_v2_t *"),
        size = ffi.sizeof("tk_ngx_key_v2_t"),
        index_symbol = "tk_ngx_ssl_ticket_keys_index",
        size_byte = V2_SIZE_BYTE,
        shared_byte = V2_SHARED_BYTE,
        shared_mask = V2_SHARED_MASK,
    },
}

-- Offsets every layout shares (the probe checks them per version too): the servers array is the first
-- field of the http and stream core main configurations, and ngx_ssl_t starts with the SSL_CTX pointer
-- followed by the log pointer (a guard reads it).
local CORE_MAIN_SERVERS = 0
local SSL_T = { ctx = 0, log = 8 }
-- The core server configuration holds, right after ctx, the configuration file name and line of its
-- server{} block (in http and stream, in every supported version): warnings name blocks with them.
local CORE_SRV_FILE_NAME_AFTER_CTX = 8
local CORE_SRV_LINE_AFTER_CTX = 16

-- LAYOUTS lists the nginx versions whose structures this module knows (ngx.config.nginx_version,
-- inclusive ranges) with the byte offsets it reads:
--   http_core_ctx   ngx_http_core_srv_conf_t.ctx
--   http_ssl_enable ngx_http_ssl_srv_conf_t.enable (nil: the field does not exist)
--   http_ssl_ctx    ngx_http_ssl_srv_conf_t.ssl.ctx
--   stream_core_ctx ngx_stream_core_srv_conf_t.ctx
--   stream_ssl_ctx  ngx_stream_ssl_conf_t.ssl.ctx
-- Each row is compared by the tests with the offsets the C compiler gives for an nginx of its range
-- (nginx/layoutprobe): Debian 12's nginx 1.22.1 (nginx-1.21.4), OpenResty 1.25.3 (nginx-1.25.1), 1.27.1
-- (nginx-1.25.5), 1.29.2 and 1.31.1 (nginx-1.29.1). The nginx-1.23.2 row has no tested build: it differs
-- from nginx-1.21.4 only in the key element, whose v2 layout the OpenResty lines check. The ranges follow
-- the nginx changes that moved a field: 1.23.2 the key element, 1.25.1 http ssl `enable` removed, 1.25.5
-- stream core `server_names` and `handler` before `ctx`, 1.29.1 a flag before the stream `ssl`. The last
-- row ends at the newest nginx checked; a newer nginx is refused until a row is checked for it.
local LAYOUTS = {
    { name = "nginx-1.21.4", min = 1021004, max = 1023001, key = "v1",
      http_core_ctx = 40, http_ssl_enable = 0, http_ssl_ctx = 8, stream_core_ctx = 8, stream_ssl_ctx = 16 },
    { name = "nginx-1.23.2", min = 1023002, max = 1025000, key = "v2",
      http_core_ctx = 40, http_ssl_enable = 0, http_ssl_ctx = 8, stream_core_ctx = 8, stream_ssl_ctx = 16 },
    { name = "nginx-1.25.1", min = 1025001, max = 1025004, key = "v2",
      http_core_ctx = 40, http_ssl_enable = nil, http_ssl_ctx = 0, stream_core_ctx = 8, stream_ssl_ctx = 16 },
    { name = "nginx-1.25.5", min = 1025005, max = 1029000, key = "v2",
      http_core_ctx = 40, http_ssl_enable = nil, http_ssl_ctx = 0, stream_core_ctx = 48, stream_ssl_ctx = 24 },
    { name = "nginx-1.29.1", min = 1029001, max = 1031001, key = "v2",
      http_core_ctx = 40, http_ssl_enable = nil, http_ssl_ctx = 0, stream_core_ctx = 48, stream_ssl_ctx = 32 },
}

-- version_string renders nginx_version (1022001) as "1.22.1".
local function version_string(v)
    return fmt("%d.%d.%d", math.floor(v / 1000000), math.floor(v / 1000) % 1000, v % 1000)
end

-- find_layout returns the layout for an nginx version number, or nil and the reason. A version outside
-- the rows is refused, never mapped to the nearest row: a newer nginx may have moved a field.
local function find_layout(v)
    if type(v) ~= "number" then
        return nil, "ngx.config.nginx_version is not available"
    end
    for _, l in ipairs(LAYOUTS) do
        if v >= l.min and v <= l.max then
            return l
        end
    end
    local oldest, newest = LAYOUTS[1].min, LAYOUTS[#LAYOUTS].max
    local where
    if v > newest then
        where = fmt("is newer than the newest nginx this module was checked against (%s)",
            version_string(newest))
    elseif v < oldest then
        where = fmt("is older than the oldest nginx this module knows (%s)", version_string(oldest))
    else
        where = "falls in no known layout row"
    end
    return nil, fmt("nginx %s (%d) %s; known: nginx %s to %s; refusing to write, nginx keeps its own keys "
        .. "(see docs/nginx-lua.md, supported versions)", version_string(v), v, where,
        version_string(oldest), version_string(newest))
end
_M._find_layout = find_layout

local function hex(s, i, j)
    local out = {}
    for k = i, j do
        out[#out + 1] = fmt("%02x", byte(s, k))
    end
    return concat(out)
end

-- MAX_KEY_LIFETIME is the engine's ceiling on not_after - not_before (168 h, RFC 8446 section 4.6.1): a
-- longer key is not one the engine made.
local MAX_KEY_LIFETIME = 168 * 3600

-- days_from_civil returns the days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
-- algorithm), so times parse without os.time, which works in local time.
local function days_from_civil(y, m, d)
    if m <= 2 then
        y = y - 1
    end
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = math.floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

local DAYS_IN_MONTH = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- parse_time reads an RFC 3339 time as the engine writes it ("2026-11-29T21:00:00Z"; a fraction of a
-- second and a numeric offset are accepted too) and returns Unix seconds, or nil and why.
local function parse_time(s)
    local y, mo, d, h, mi, sec, frac, zone = s:match(
        "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
    if not y then
        return nil, "is not an RFC 3339 time like 2026-11-29T21:00:00Z"
    end
    y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
    if y < 2000 or y > 9999 then
        return nil, "has a year outside 2000..9999"
    end
    local dim = DAYS_IN_MONTH[mo]
    if mo == 2 and (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) then
        dim = 29
    end
    if not dim or d < 1 or d > dim or h > 23 or mi > 59 or sec > 59 then
        return nil, "is not a valid date and time"
    end
    if frac == "." then
        return nil, "has an empty fraction of a second"
    end
    local offset = 0
    if zone ~= "Z" and zone ~= "z" then
        local sign, oh, om = zone:match("^([+-])(%d%d):(%d%d)$")
        if not sign or tonumber(oh) > 23 or tonumber(om) > 59 then
            return nil, "has no time zone (want Z or +hh:mm)"
        end
        offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
    end
    local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
    if #frac > 1 then
        t = t + tonumber("0" .. frac)
    end
    return t
end
_M._parse_time = parse_time

-- TIME_FIELDS are the fields of a timed window line after the key, in order.
local TIME_FIELDS = { "not_before", "encrypt_until", "not_after" }

-- parse_window checks a window file's content and returns
--   {size = 48|80, keys = {raw...}, ids = {hex...}, timed = bool,
--    not_before = {t...}, encrypt_until = {t...}, not_after = {t...}}   (the times only when timed)
-- or nil and an error naming the line, the field and the rule. Errors never include key material.
--
-- Two line forms exist, never mixed in one file:
--   "<base64 key>"                                                 (old template: the file's order decides)
--   "<base64 key> <not_before> <encrypt_until> <not_after>"        (the times decide, see schedule_at)
-- A timed key needs not_before < not_after <= not_before + 168h and not_before <= encrypt_until (a
-- zero-length key, encrypt_until == not_before, never encrypts); two keys may share a not_before only
-- when at most one of them ever encrypts.
local function parse_window(content, path)
    path = path or "window file"
    if type(content) ~= "string" or #content == 0 then
        return nil, fmt("%s is empty: a window needs at least one key line", path)
    end
    if #content > MAX_FILE_BYTES then
        return nil, fmt("%s is %d bytes, more than the %d bytes a window of %d keys can take", path,
            #content, MAX_FILE_BYTES, MAX_KEYS)
    end
    if content:sub(-1) ~= "\n" then
        return nil, fmt("%s does not end with a newline: the file is truncated (every key line ends "
            .. "with \\n)", path)
    end
    local keys, ids, names = {}, {}, {}
    local nb, eu, na = {}, {}, {}
    local size, timed
    local lineno = 0
    for line in content:gmatch("([^\n]*)\n") do
        lineno = lineno + 1
        line = line:gsub("\r$", "")
        if line:find("^%s*$") then
            return nil, fmt("%s line %d is blank: every line must hold one base64 key", path, lineno)
        end
        if lineno > MAX_KEYS then
            return nil, fmt("%s has more than %d keys", path, MAX_KEYS)
        end
        local fields = {}
        for f in line:gmatch("[^ ]+") do
            fields[#fields + 1] = f
        end
        if #fields ~= 1 and #fields ~= 4 then
            return nil, fmt("%s line %d has %d fields: want a base64 key alone, or a base64 key, its "
                .. "not_before, encrypt_until and not_after separated by single spaces", path, lineno,
                #fields)
        end
        local line_timed = #fields == 4
        if timed == nil then
            timed = line_timed
        elseif timed ~= line_timed then
            return nil, fmt("%s line %d %s times but line 1 %s: a window file is either all timed "
                .. "lines or all plain key lines", path, lineno, line_timed and "has" or "has no",
                timed and "has" or "has none")
        end
        local b64 = fields[1]
        if not b64:find("^[A-Za-z0-9+/]+=*$") then
            return nil, fmt("%s line %d is not standard base64 (%d characters)", path, lineno, #b64)
        end
        local raw = ngx.decode_base64(b64)
        if raw == nil then
            return nil, fmt("%s line %d is not valid padded base64 (%d characters)", path, lineno, #b64)
        end
        if #raw ~= 48 and #raw ~= 80 then
            return nil, fmt("%s line %d decodes to %d bytes: a key must be 48 or 80 bytes", path,
                lineno, #raw)
        end
        if size == nil then
            size = #raw
        elseif #raw ~= size then
            return nil, fmt("%s line %d decodes to %d bytes but line 1 to %d: a window never mixes "
                .. "key sizes", path, lineno, #raw, size)
        end
        local id = hex(raw, 1, 16)
        if names[id] then
            return nil, fmt("%s line %d repeats the key name %s of line %d: key names must be "
                .. "distinct", path, lineno, id, names[id])
        end
        if timed then
            local t = {}
            for i, field in ipairs(TIME_FIELDS) do
                local v, terr = parse_time(fields[i + 1])
                if not v then
                    return nil, fmt("%s line %d (key %s) %s %q %s", path, lineno, id, field,
                        fields[i + 1], terr)
                end
                t[i] = v
            end
            if t[3] <= t[1] then
                return nil, fmt("%s line %d (key %s) not_after %s must be after not_before %s", path,
                    lineno, id, fields[4], fields[2])
            end
            if t[3] - t[1] > MAX_KEY_LIFETIME then
                return nil, fmt("%s line %d (key %s) not_after %s is more than 168h after not_before "
                    .. "%s (the engine's max_key_lifetime ceiling)", path, lineno, id, fields[4], fields[2])
            end
            if t[2] < t[1] then
                return nil, fmt("%s line %d (key %s) encrypt_until %s must not be before not_before %s",
                    path, lineno, id, fields[3], fields[2])
            end
            nb[lineno], eu[lineno], na[lineno] = t[1], t[2], t[3]
        end
        names[id] = lineno
        keys[lineno] = raw
        ids[lineno] = id
    end
    if lineno == 0 then
        return nil, fmt("%s has no key line", path)
    end
    if timed then
        -- Exactly one key encrypts at any instant: keys that encrypt for a while never share a start.
        local starts = {}
        for i = 1, lineno do
            if eu[i] > nb[i] and na[i] > nb[i] then
                local j = starts[nb[i]]
                if j then
                    return nil, fmt("%s line %d (key %s) not_before is the same as line %d's (key %s) "
                        .. "and both encrypt for a while: at most one of the keys sharing a not_before "
                        .. "may encrypt (the other must have encrypt_until == not_before)", path, i,
                        ids[i], j, ids[j])
                end
                starts[nb[i]] = i
            end
        end
    end
    local w = { size = size, keys = keys, ids = ids, timed = timed or false }
    if timed then
        w.not_before, w.encrypt_until, w.not_after = nb, eu, na
    end
    return w
end
_M._parse_window = parse_window

-- schedule_at applies the schedule of a timed window at instant now (Unix seconds), the rule the engine
-- and the Go client use. It returns
--   {order = {line...}, states = {[line] = "current"|"next"|"previous"}, current = line|nil,
--    source = "schedule"|"clock behind"|nil, exhausted = bool, next_change = t|nil}
-- where order lists the live keys (now < not_after) as the engine's window lists them: the encrypting
-- key first, then the next keys by activation, then the previous keys newest first.
--   The encrypting key is the latest-activated key with not_before <= now < min(encrypt_until,
--   not_after). When none is and every key activates after now, this node's clock is behind Vault's:
--   the file's first line (the engine's current key when Agent rendered it) encrypts, as in the Go
--   client. Otherwise no published key may encrypt (exhausted): the caller adds a local key.
--   next_change is the first instant after now at which the result changes (a not_before, an
--   encrypt_until or a not_after), or nil.
local function schedule_at(w, now)
    local nb, eu, na = w.not_before, w.encrypt_until, w.not_after
    local n = #w.keys
    local cur
    local earliest
    local next_change
    local function consider(t)
        if t > now and (next_change == nil or t < next_change) then
            next_change = t
        end
    end
    for i = 1, n do
        local stop = math.min(eu[i], na[i])
        if now < na[i] then
            consider(nb[i])
            consider(stop)
            consider(na[i])
            if nb[i] <= now and now < stop and (cur == nil or nb[i] > nb[cur]) then
                cur = i
            end
        end
        if earliest == nil or nb[i] < earliest then
            earliest = nb[i]
        end
    end
    local source = cur and "schedule" or nil
    if cur == nil and now < earliest and now < na[1] then
        cur, source = 1, "clock behind"
    end
    local nexts, prevs = {}, {}
    for i = 1, n do
        if i ~= cur and now < na[i] then
            if nb[i] > now then
                nexts[#nexts + 1] = i
            else
                prevs[#prevs + 1] = i
            end
        end
    end
    table.sort(nexts, function(a, b)
        if nb[a] ~= nb[b] then
            return nb[a] < nb[b]
        end
        return a < b
    end)
    table.sort(prevs, function(a, b)
        if nb[a] ~= nb[b] then
            return nb[a] > nb[b]
        end
        return a < b
    end)
    local order, states = {}, {}
    if cur then
        order[1] = cur
        states[cur] = "current"
    end
    for _, i in ipairs(nexts) do
        order[#order + 1] = i
        states[i] = "next"
    end
    for _, i in ipairs(prevs) do
        order[#order + 1] = i
        states[i] = "previous"
    end
    return { order = order, states = states, current = cur, source = source, exhausted = cur == nil,
        next_change = next_change }
end
_M._schedule_at = schedule_at

-- ptr_at reads a pointer stored at base + offset.
local function ptr_at(base, offset)
    return ffi.cast(void_pp, ffi.cast(char_p, base) + offset)[0]
end

-- uint_at reads a pointer-sized unsigned integer at base + offset.
local function uint_at(base, offset)
    return tonumber(ffi.cast(uintptr_p, ffi.cast(char_p, base) + offset)[0])
end

-- PLATFORMS lists the platforms (LuaJIT's ffi.os and ffi.arch, 64-bit little-endian) this module is
-- tested on, with the end of the user half of the address space there: every pointer nginx holds lies
-- below it, so a value at or above it is no pointer (a wrong offset read a key byte, a flag or garbage).
--   x64 (x86_64): canonical lower half, below 2^47 (0x800000000000). With 5-level paging (57-bit VA) the
--     kernel still maps below 2^47 unless a process asks for a higher mmap hint; nginx, glibc and LuaJIT
--     do not.
--   arm64 (aarch64): 48-bit VA, below 2^48 (0x1000000000000); Debian's arm64 binaries and heap sit near
--     0xaaaa..., shared libraries and stacks near 0xffff.... Kernels built for 52-bit VA
--     (CONFIG_ARM64_VA_BITS_52) also map below 2^48 unless a process passes an mmap hint above it, which
--     nginx, glibc and LuaJIT do not; a pointer above 2^48 (or a tagged pointer: MTE or top-byte tags
--     set) is refused, and the module then writes nothing and nginx keeps its keys.
-- Tests: x64 on Debian's nginx and every OpenResty line; arm64 on Debian 12's arm64 nginx 1.22.1 under
-- qemu-user (nginx/arm64_test.go). Any other platform (32-bit, big-endian, another CPU or OS) is refused
-- by name at start: its pointers, alignment or layouts were never checked.
local PLATFORMS = {
    x64 = { name = "x86_64", user_top = 0x800000000000ULL },
    arm64 = { name = "arm64 (aarch64)", user_top = 0x1000000000000ULL },
}

-- platform returns the PLATFORMS entry for an OS, a LuaJIT architecture and ABI flags (ffi.os, ffi.arch,
-- ffi.abi("64bit"), ffi.abi("le")), or nil and an error that names the platform and the tested ones.
local function platform(os, arch, is64, le)
    local p = PLATFORMS[arch]
    if p and os == "Linux" and is64 and le then
        return p
    end
    return nil, fmt("this nginx runs on %s %s (%s, %s): resty.ticketkeys is tested only on Linux x86_64 "
        .. "and Linux arm64 (aarch64, little-endian) and refuses other platforms; refusing to write, "
        .. "nginx keeps its own keys (see docs/nginx-lua.md, supported platforms)", tostring(os),
        tostring(arch), is64 and "64-bit" or "32-bit", le and "little-endian" or "big-endian")
end
_M._platform = platform

local PLATFORM, PLATFORM_ERR = platform(ffi.os, ffi.arch, ffi.abi("64bit"), ffi.abi("le"))
-- USER_TOP is this platform's end of user space; 0 on a refused platform, where no pointer is plausible.
local USER_TOP = PLATFORM and PLATFORM.user_top or 0ULL

-- below_top reports whether an address is a plausible user-space address under top: not NULL, above
-- the first 64 KiB (a flag or a small count read as a pointer lands there) and below top.
local function below_top(v, top)
    return v >= 65536 and v < top
end

-- plausible reports whether a pointer read from memory can be dereferenced: a user-space address of
-- this platform (below_top, USER_TOP) and pointer-aligned. It catches a wrong offset before the
-- pointer is followed.
local function plausible(p)
    if p == nil then
        return false
    end
    local v = ffi.cast("uintptr_t", p)
    return below_top(v, USER_TOP) and v % 8 == 0
end

-- plausible_any is plausible without the alignment rule, for byte pointers (strings).
local function plausible_any(p)
    if p == nil then
        return false
    end
    return below_top(ffi.cast("uintptr_t", p), USER_TOP)
end

-- _plausible_on reports whether an address (a number or uint64 cdata) is a plausible aligned pointer on
-- a LuaJIT architecture of PLATFORMS (for the tests, which run on one architecture and check both).
function _M._plausible_on(arch, v)
    local p = PLATFORMS[arch]
    local a = ffi.cast("uint64_t", v)
    return p ~= nil and below_top(a, p.user_top) and a % 8 == 0
end

local function addr(p)
    return tostring(ffi.cast("uintptr_t", p))
end

-- module_info reads the ctx_index and index of an nginx module symbol, or nil when the module is not
-- part of this nginx (the stream module is dynamic and optional).
local function module_info(sym)
    local ok, m = pcall(function() return C[sym] end)
    if not ok then
        return nil
    end
    return { ctx_index = tonumber(m.ctx_index), index = tonumber(m.index), version = tonumber(m.version) }
end

-- ticket_keys_index returns the SSL_CTX ex_data index under which nginx stores the key array.
local function ticket_keys_index(layout)
    local sym = KEY_TYPES[layout.key].index_symbol
    local ok, v = pcall(function() return C[sym] end)
    if not ok then
        return nil, fmt("symbol %s not found: nginx was not built with -Wl,-E or the layout %s is wrong",
            sym:gsub("^tk_", ""), layout.name)
    end
    v = tonumber(v)
    if v < 0 then
        return nil, fmt("%s is %d: OpenSSL ex_data index not set up", sym:gsub("^tk_", ""), v)
    end
    return v
end

-- key_size returns the size field (48 or 80 for a key nginx loaded) and the shared flag of element i.
-- The v2 fields are FFI bitfields: the rest of their 32-bit word is uninitialised memory.
local function key_size(kt, elts, i)
    local k = ffi.cast(kt.ptr, elts) + i
    if kt.name == "v1" then
        return tonumber(k.size), 0
    end
    return tonumber(k.size), tonumber(k.shared)
end

-- check_keys validates one server block's key array against the layout. It returns nil when the array
-- can be written; "skip" and the reason when it holds keys nginx manages itself (1.23.2+: the 3-slot
-- array of ssl_session_cache shared:... without placeholders, whose size nginx leaves uninitialised, so
-- shared is read first); or "bad" and the reason when the array is not what the layout says.
local function check_keys(arr, kt)
    local esize = tonumber(arr.size)
    if esize ~= kt.size then
        return "bad", fmt("key array element size is %d, want %d", esize, kt.size)
    end
    local nelts, nalloc = tonumber(arr.nelts), tonumber(arr.nalloc)
    if nelts < 1 or nelts > nalloc or nalloc > MAX_CAPACITY then
        return "bad", fmt("key array counts nelts=%d nalloc=%d are out of range (1 <= nelts <= nalloc <= %d)",
            nelts, nalloc, MAX_CAPACITY)
    end
    if not plausible(arr.elts) then
        return "bad", "key array elements pointer is not plausible"
    end
    local _, shared0 = key_size(kt, arr.elts, 0)
    if shared0 ~= 0 then
        return "skip", "its ticket keys are nginx's own, in the shared memory of ssl_session_cache "
            .. "(no ssl_session_ticket_key placeholder applies to it): skipped, nginx keeps rotating "
            .. "them per host; give the block placeholders to install the window there"
    end
    for i = 0, nelts - 1 do
        local sz, shared = key_size(kt, arr.elts, i)
        if sz ~= 48 and sz ~= 80 then
            return "bad", fmt("existing key %d has size %d, want 48 or 80", i, sz)
        end
        if shared ~= 0 then
            return "bad", fmt("existing key %d is marked shared but key 0 is not", i)
        end
    end
    return nil
end

-- MAX_FILE_NAME bounds the read of a block's configuration file name.
local MAX_FILE_NAME = 4096

-- block_where returns "file:line" of a server{} block from its core server configuration, or "" when
-- the file name pointer is not plausible. It reads at most MAX_FILE_NAME bytes of the name.
local function block_where(cscf, core_off)
    local name = ptr_at(cscf, core_off + CORE_SRV_FILE_NAME_AFTER_CTX)
    if not plausible_any(name) then
        return ""
    end
    local p = ffi.cast(u8_p, name)
    local n = 0
    while n < MAX_FILE_NAME and p[n] ~= 0 do
        n = n + 1
    end
    if n == 0 or n == MAX_FILE_NAME then
        return ""
    end
    return fmt("%s:%d", ffi.string(p, n), uint_at(cscf, core_off + CORE_SRV_LINE_AFTER_CTX))
end

-- tk_keys fetches the key array pointer nginx attached to an SSL_CTX (NULL without placeholders).
local function tk_keys(sslctx, kidx)
    return C.tk_SSL_CTX_get_ex_data(sslctx, kidx)
end

-- collect_blocks walks the server blocks of one module family ("http" or "stream") and appends a target
-- {kind, index, where, keys} for each TLS block with a writable key array, and a note for each TLS block
-- it leaves alone (no array, or keys nginx manages itself). It returns nil and the reason on a layout
-- guard failure (then nothing may be written anywhere).
local function collect_blocks(kind, layout, kt, kidx, targets, notes)
    local main, core, ssl
    if kind == "http" then
        main = module_info("tk_ngx_http_module")
        core = module_info("tk_ngx_http_core_module")
        ssl = module_info("tk_ngx_http_ssl_module")
    else
        main = module_info("tk_ngx_stream_module")
        core = module_info("tk_ngx_stream_core_module")
        ssl = module_info("tk_ngx_stream_ssl_module")
    end
    if main == nil or core == nil then
        return true -- module family not in this nginx
    end
    local want = ngx.config.nginx_version
    if main.version ~= want or core.version ~= want then
        return nil, fmt("%s module reports nginx version %s, the Lua module %d: mismatched builds",
            kind, tostring(main.version), want)
    end
    local cycle = C.tk_ngx_cycle
    if cycle == nil or cycle.conf_ctx == nil then
        return nil, "ngx_cycle has no configuration"
    end
    local max_module = tonumber(C.tk_ngx_max_module)
    if main.index >= max_module then
        return nil, fmt("%s module index %d is not below ngx_max_module %d", kind, main.index, max_module)
    end
    local ctx = ffi.cast(conf_ctx_p, cycle.conf_ctx[main.index])
    if ctx == nil then
        return true -- no http{} / stream{} block
    end
    if ssl == nil then
        return true -- no TLS module in this family
    end
    local cmcf = ctx.main_conf[core.ctx_index]
    if cmcf == nil then
        return nil, fmt("%s core main configuration is missing", kind)
    end
    if not plausible(cmcf) then
        return nil, fmt("%s core main configuration pointer is not plausible", kind)
    end
    local servers = ffi.cast(array_p, ffi.cast(char_p, cmcf) + CORE_MAIN_SERVERS)
    local ptr_size = ffi.sizeof("void *")
    if tonumber(servers.size) ~= ptr_size then
        return nil, fmt("%s servers array element size is %d, want %d (pointer)", kind,
            tonumber(servers.size), ptr_size)
    end
    local nservers = tonumber(servers.nelts)
    if nservers > tonumber(servers.nalloc) or nservers > 100000 then
        return nil, fmt("%s servers array counts nelts=%d nalloc=%d are inconsistent", kind, nservers,
            tonumber(servers.nalloc))
    end
    if nservers > 0 and not plausible(servers.elts) then
        return nil, fmt("%s servers array elements pointer is not plausible", kind)
    end
    local elts = ffi.cast(void_pp, servers.elts)
    local core_off = kind == "http" and layout.http_core_ctx or layout.stream_core_ctx
    local ssl_off = kind == "http" and layout.http_ssl_ctx or layout.stream_ssl_ctx
    for i = 0, nservers - 1 do
        local cscf = elts[i]
        if not plausible(cscf) then
            return nil, fmt("%s server %d configuration pointer is not plausible", kind, i)
        end
        local sctx = ffi.cast(conf_ctx_p, ptr_at(cscf, core_off))
        if not plausible(sctx) or not plausible(sctx.srv_conf)
            or sctx.srv_conf[core.ctx_index] ~= cscf
        then
            return nil, fmt("%s server %d: core configuration does not point back at itself through "
                .. "ctx at offset %d", kind, i, core_off)
        end
        local sscf = sctx.srv_conf[ssl.ctx_index]
        if sscf ~= nil and not plausible(sscf) then
            return nil, fmt("%s server %d ssl configuration pointer is not plausible", kind, i)
        end
        if sscf ~= nil then
            if kind == "http" and layout.http_ssl_enable then
                local enable = uint_at(sscf, layout.http_ssl_enable)
                if enable ~= 0 and enable ~= 1 then
                    return nil, fmt("http server %d: ssl enable flag is %d, want 0 or 1", i, enable)
                end
            end
            local sslctx = ptr_at(sscf, ssl_off)
            if sslctx ~= nil and not plausible(sslctx) then
                return nil, fmt("%s server %d: SSL_CTX pointer at offset %d is not plausible", kind, i,
                    ssl_off)
            end
            if sslctx ~= nil and not plausible(ptr_at(sscf, ssl_off - SSL_T.ctx + SSL_T.log)) then
                return nil, fmt("%s server %d: ngx_ssl_t.log after the SSL_CTX at offset %d is not a "
                    .. "plausible pointer", kind, i, ssl_off)
            end
            if sslctx ~= nil then
                local keys = tk_keys(sslctx, kidx)
                if keys ~= nil and not plausible(keys) then
                    return nil, fmt("%s server %d: key array pointer is not plausible", kind, i)
                end
                local where = block_where(cscf, core_off)
                local name = fmt("%s server %d%s", kind, i, where ~= "" and " (" .. where .. ")" or "")
                if keys == nil then
                    notes[#notes + 1] = { kind = kind, server = i, where = where,
                        reason = "no ssl_session_ticket_key placeholder" }
                    notes[#notes].text = fmt("%s has TLS but no ssl_session_ticket_key placeholder: where it "
                        .. "is the default server of a listen socket, that socket's tickets use nginx's own "
                        .. "keys", name)
                else
                    local arr = ffi.cast(array_p, keys)
                    local verdict, why = check_keys(arr, kt)
                    if verdict == "bad" then
                        return nil, fmt("%s: %s", name, why)
                    elseif verdict == "skip" then
                        notes[#notes + 1] = { kind = kind, server = i, where = where,
                            reason = "ssl_session_cache shared keys", text = fmt("%s: %s", name, why) }
                    else
                        targets[#targets + 1] = { kind = kind, index = i, where = where, keys = arr }
                    end
                end
            end
        end
    end
    return true
end

-- layout_row returns, for an nginx version, every offset and size the module uses, in the shape of
-- nginx/layoutprobe's row (the C compiler's view of that nginx's headers), so the tests can compare them
-- field by field; nil and the reason for an unknown version.
local function layout_row(v)
    local l, err = find_layout(v)
    if not l then
        return nil, err
    end
    local kt = KEY_TYPES[l.key]
    local null = ngx and ngx.null
    local function family(core_ctx, ssl_ctx, enable)
        return {
            conf_ctx_main_conf = ffi.offsetof("tk_ngx_conf_ctx_t", "main_conf"),
            conf_ctx_srv_conf = ffi.offsetof("tk_ngx_conf_ctx_t", "srv_conf"),
            core_main_servers = CORE_MAIN_SERVERS,
            core_srv_ctx = core_ctx,
            core_srv_file_name = core_ctx + CORE_SRV_FILE_NAME_AFTER_CTX,
            core_srv_line = core_ctx + CORE_SRV_LINE_AFTER_CTX,
            ssl_enable = enable == nil and null or enable,
            ssl_ctx = ssl_ctx,
        }
    end
    local key = { sizeof = kt.size }
    local kname = kt.name == "v1" and "tk_ngx_key_v1_t" or "tk_ngx_key_v2_t"
    key.name = ffi.offsetof(kname, "name")
    key.hmac_key = ffi.offsetof(kname, "hmac_key")
    key.aes_key = ffi.offsetof(kname, "aes_key")
    if kt.name == "v1" then
        key.size_field, key.expire, key.expire_size = ffi.offsetof(kname, "size"), null, null
        key.size_byte, key.shared_byte, key.shared_mask = null, null, null
    else
        key.size_field = null
        key.expire, key.expire_size = ffi.offsetof(kname, "expire"), ffi.sizeof("int64_t")
        key.size_byte, key.shared_byte, key.shared_mask = kt.size_byte, kt.shared_byte, kt.shared_mask
    end
    return {
        layout = l.name,
        nginx_version = v,
        pointer_size = ffi.sizeof("void *"),
        cycle_conf_ctx = ffi.offsetof("tk_ngx_cycle_t", "conf_ctx"),
        module = {
            ctx_index = ffi.offsetof("tk_ngx_module_t", "ctx_index"),
            index = ffi.offsetof("tk_ngx_module_t", "index"),
            version = ffi.offsetof("tk_ngx_module_t", "version"),
        },
        array = {
            elts = ffi.offsetof("tk_ngx_array_t", "elts"),
            nelts = ffi.offsetof("tk_ngx_array_t", "nelts"),
            size = ffi.offsetof("tk_ngx_array_t", "size"),
            nalloc = ffi.offsetof("tk_ngx_array_t", "nalloc"),
            sizeof = ffi.sizeof("tk_ngx_array_t"),
        },
        ssl = { ctx = SSL_T.ctx, log = SSL_T.log },
        http = family(l.http_core_ctx, l.http_ssl_ctx, l.http_ssl_enable),
        stream = family(l.stream_core_ctx, l.stream_ssl_ctx, nil),
        key = key,
        index_symbol = (kt.index_symbol:gsub("^tk_", "")),
    }
end
_M._layout_row = layout_row

-- new_state returns the per-worker state of one scope: a window file and the blocks it is installed in
-- (every TLS block without start{ scopes }, else the blocks of one scope, or the blocks matching no scope
-- for the top-level file). Every worker has its own key arrays, schedule timer and local keys per scope.
local function new_state(file, scoped)
    return {
        file = file,
        scoped = scoped,     -- nil: the only window; "scope": a scopes[] entry; "rest": the top-level file
                             -- when scopes exist (blocks matching no scope)
        servers = nil,       -- the scope's server patterns (scopes[] entries only)
        interval = DEFAULT_INTERVAL,
        layout = nil,
        layout_err = nil,
        window = nil,        -- the parsed window this worker follows (the last good file content)
        window_at = nil,     -- ngx.now() when that content was read
        digest = nil,        -- md5 of that content
        bad_digest = nil,    -- md5 of the last rejected content (parsed once)
        bad_error = nil,     -- why it was rejected
        last_error = nil,
        last_error_at = nil, -- ngx.now() when last_error was last logged
        error_repeat = DEFAULT_ERROR_REPEAT,
        installed = nil,     -- the entries installed in the scope's blocks (plan_at), element 1 encrypts
        installed_sig = nil, -- md5 of their material, to install only a change
        schedule = nil,      -- the last schedule_at result (timed windows)
        evaluated_at = nil,  -- ngx.now() of the last schedule evaluation
        switched_at = nil,   -- ngx.now() when the encrypting key last changed
        switched_by = nil,   -- what changed it: "schedule timer", "periodic check" or "window file"
        timer_at = nil,      -- the instant the pending schedule timer fires for
        locals = {},         -- worker-local keys (see local_keys)
        applied_at = nil,
        applies = 0,
        owned = {},          -- key array address -> malloc'd elements this worker installed
        dict = nil,          -- the lua_shared_dict of start{ shared_dict = ... }, or nil
        dict_name = nil,
        dict_error = nil,    -- the last failure to store into it (logged once per distinct text)
        source = nil,        -- where the followed window came from: "file" or "shared_dict"
        placeholder = false, -- true while this nginx start's random placeholder is installed (no window)
    }
end

-- state is the scope being worked on. Every entry point (start, the periodic tick, a schedule timer,
-- snapshot) sets it before calling the functions below, which never yield, so one worker's scopes never
-- mix: nginx runs a worker's Lua on one thread, one handler at a time between yields.
local state = new_state(nil, nil)
-- states lists this worker's scopes (start{} sets it): scopes[] entries in order, then the top-level
-- file's, if any.
local states = {}
-- rules assigns server blocks to scopes: {where = {["file:line"] = st}, file = {[file] = st}, rest = st}.
local rules = nil
-- notes_logged is true once this worker logged the notes about blocks it leaves alone.
local notes_logged = false

-- block_file returns the configuration file of a block's "file:line" (where), or nil.
local function block_file(where)
    return where:match("^(.*):%d+$")
end

-- scope_of returns the scope state a server block belongs to: the scope whose server names its
-- "file:line", else the one naming its file, else the top-level file's (nil without one: the block is
-- left as nginx has it). Before start{} there is none.
local function scope_of(where)
    if not rules then
        return nil
    end
    local st = rules.where[where]
    if st == nil then
        local file = block_file(where)
        st = file and rules.file[file]
    end
    return st or rules.rest
end

-- discover returns every writable key array of this worker, each with its scope, or nil and the layout
-- guard that failed.
local function discover()
    if not PLATFORM then
        return nil, PLATFORM_ERR
    end
    local layout, err = find_layout(ngx.config.nginx_version)
    if not layout then
        return nil, err
    end
    local kt = KEY_TYPES[layout.key]
    local kidx, ierr = ticket_keys_index(layout)
    if not kidx then
        return nil, fmt("layout %s guard failed: %s; refusing to write, nginx keeps its own keys",
            layout.name, ierr)
    end
    local targets, notes = {}, {}
    for _, kind in ipairs({ "http", "stream" }) do
        local ok, gerr = collect_blocks(kind, layout, kt, kidx, targets, notes)
        if not ok then
            return nil, fmt("layout %s guard failed: %s; refusing to write, nginx keeps its own keys",
                layout.name, gerr)
        end
    end
    -- A key array reached twice (never seen, but cheap to rule out) is written once.
    local seen, uniq = {}, {}
    for _, t in ipairs(targets) do
        local a = addr(t.keys)
        if not seen[a] then
            seen[a] = true
            t.scope = scope_of(t.where)
            uniq[#uniq + 1] = t
        end
    end
    return { layout = layout, kt = kt, targets = uniq, notes = notes }
end

-- fill_key writes one decoded key into an element, in nginx's in-memory layout.
local function fill_key(kt, k, raw)
    ffi.fill(k, kt.size)
    local src = ffi.cast(u8_cp, raw)
    ffi.copy(k.name, src, 16)
    if #raw == 80 then
        ffi.copy(k.hmac_key, src + 16, 32)
        ffi.copy(k.aes_key, src + 48, 32)
    else
        ffi.copy(k.aes_key, src + 16, 16)
        ffi.copy(k.hmac_key, src + 32, 16)
    end
    if kt.name == "v1" then
        k.size = #raw
    else
        k.expire = 1 -- as nginx sets for keys from files: non-zero renews tickets of older keys
        k.size = #raw -- size:8 = 48|80; shared:1 stays 0 from the fill above
    end
end

-- _key_fields fills a key element of generation kind ("v1" or "v2") from a decoded window key exactly as
-- the module fills nginx's arrays, and returns the hex of the name, hmac and aes fields nginx will use
-- (16 bytes each for a 48-byte key, 32 for an 80-byte key): the tests hold it to the engine's layout
-- vectors. Test material only.
function _M._key_fields(kind, raw)
    local kt = KEY_TYPES[kind]
    local k = ffi.new(kt.ptr == KEY_TYPES.v1.ptr and "tk_ngx_key_v1_t" or "tk_ngx_key_v2_t")
    fill_key(kt, k, raw)
    local n = #raw == 80 and 32 or 16
    local name = ffi.string(k.name, 16)
    local hmac = ffi.string(k.hmac_key, n)
    local aes = ffi.string(k.aes_key, n)
    return hex(name, 1, 16), hex(hmac, 1, n), hex(aes, 1, n)
end

-- malloc is libc malloc behind a test-only fault hook: _M._test = { malloc_fail = N } makes the Nth
-- call from now return NULL (nginx/lastgood_test.go). _M._test is nil unless a test sets it.
local function malloc(size)
    local t = _M._test
    if t and t.malloc_fail then
        t.malloc_fail = t.malloc_fail - 1
        if t.malloc_fail <= 0 then
            t.malloc_fail = t.malloc_fail_always and 1 or nil
            return nil
        end
    end
    return C.tk_malloc(size)
end

-- prepare_window is the first phase of writing a window into one key array: everything that can fail
-- (the allocation of a larger array, filled with the keys) happens here and changes nothing nginx reads.
-- It returns the prepared write for commit_window, or nil and the reason.
local function prepare_window(kt, arr, keys)
    local n = #keys
    local p = { arr = arr, n = n }
    if n <= tonumber(arr.nalloc) then
        return p -- in place: nothing to allocate
    end
    local buf = malloc(n * kt.size)
    if buf == nil then
        return nil, fmt("malloc of %d bytes for %d keys failed", n * kt.size, n)
    end
    local k = ffi.cast(kt.ptr, buf)
    for i = 1, n do
        fill_key(kt, k[i - 1], keys[i])
    end
    p.buf = buf
    return p
end

-- discard_window undoes prepare_window: the prepared array is zeroed and freed.
local function discard_window(kt, p)
    if p.buf ~= nil then
        ffi.fill(p.buf, p.n * kt.size)
        C.tk_free(p.buf)
        p.buf = nil
    end
end

-- commit_window is the second phase, which cannot fail: the keys are written in place (unused slots
-- zeroed, nelts lowered), or the prepared array replaces the old one (zeroed, and freed if this worker
-- allocated it).
local function commit_window(kt, p, keys)
    local arr, n = p.arr, p.n
    local nalloc = tonumber(arr.nalloc)
    if p.buf == nil then
        local k = ffi.cast(kt.ptr, arr.elts)
        for i = 1, n do
            fill_key(kt, k[i - 1], keys[i])
        end
        if nalloc > n then
            ffi.fill(k + n, (nalloc - n) * kt.size)
        end
        arr.nelts = n
        return
    end
    local a = addr(arr)
    local old = arr.elts
    arr.elts = p.buf
    arr.nalloc = n
    arr.nelts = n
    ffi.fill(old, nalloc * kt.size)
    if state.owned[a] ~= nil and state.owned[a] == old then
        C.tk_free(old)
    end
    state.owned[a] = p.buf
end

local function log_error(msg)
    state.last_error = msg
    ngx.log(ngx.ERR, LOG_PREFIX, msg)
end

-- iso renders Unix seconds as the engine writes times (UTC, RFC 3339).
local function iso(t)
    if t == nil then
        return nil
    end
    return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

-- serving says which keys this worker serves, for failure logs: ids only, never material.
local function serving()
    if state.placeholder and state.installed then
        return fmt("this worker serves this nginx start's random placeholder key (id %s, shared by its "
            .. "workers through lua_shared_dict %s, new at every start of nginx): its tickets do not "
            .. "resume on other nodes", state.installed[1].id, state.dict_name)
    end
    if not state.installed then
        return "this worker serves nginx's placeholder keys (no window installed yet): its tickets do "
            .. "not resume on other nodes"
    end
    local cur = state.installed[1]
    local how = "in the file's order (a window file without times)"
    if state.window and state.window.timed then
        how = fmt("on the schedule of the window read %ds ago, by itself",
            math.floor(ngx.now() - state.window_at))
    end
    if state.source == "shared_dict" then
        how = how .. fmt("; the last good window from lua_shared_dict %s", state.dict_name)
    end
    return fmt("this worker serves the window installed %ds ago (current id %s%s, %d keys), %s",
        math.floor(ngx.now() - state.applied_at), cur.id, cur.state == "local" and ", worker-local" or "",
        #state.installed, how)
end

-- log_failure logs a refresh failure at error level when it is new, and again every error_repeat
-- seconds while it lasts, each time with the keys the worker serves meanwhile.
local function log_failure(msg)
    local now = ngx.now()
    if msg == state.last_error and state.last_error_at and now - state.last_error_at < state.error_repeat then
        return
    end
    state.last_error = msg
    state.last_error_at = now
    ngx.log(ngx.ERR, LOG_PREFIX, msg, "; ", serving())
end

-- random_key returns size random bytes from OpenSSL's CSPRNG (the one nginx's own keys come from).
local function random_key(size)
    local buf = ffi.new("uint8_t[?]", size)
    if C.tk_RAND_bytes(buf, size) ~= 1 then
        return nil, "RAND_bytes failed"
    end
    local s = ffi.string(buf, size)
    ffi.fill(buf, size)
    return s
end

-- local_keys keeps this worker's local keys in step with the schedule at now: while no published key
-- may encrypt (exhausted), one local random key encrypts (made once per outage, replaced after 168h), as
-- the Go client's node-local key does, rather than a key past its encrypt_until; when a published key
-- encrypts again, the local key stops encrypting and still decrypts for the keyring's retain (the
-- encrypting key's not_after - encrypt_until), then leaves. It returns the live local keys, newest first.
local function local_keys(w, sched, now)
    local enc
    for _, lk in ipairs(state.locals) do
        if lk.encrypting then
            enc = lk
        end
    end
    if sched.exhausted then
        if enc and now - enc.created >= MAX_KEY_LIFETIME then
            enc.encrypting, enc.not_after = false, now
            enc = nil
        end
        if not enc then
            local raw, err = random_key(w.size)
            if not raw then
                return nil, err
            end
            enc = { raw = raw, id = hex(raw, 1, 16), created = now, encrypting = true }
            state.locals[#state.locals + 1] = enc
        end
    elseif enc then
        local c = sched.current
        enc.encrypting = false
        enc.not_after = now + math.max(0, w.not_after[c] - math.min(w.encrypt_until[c], w.not_after[c]))
    end
    local live = {}
    for _, lk in ipairs(state.locals) do
        if lk.encrypting or now < lk.not_after then
            live[#live + 1] = lk
        end
    end
    state.locals = live
    local out = {}
    for i = #live, 1, -1 do
        out[#out + 1] = live[i]
    end
    return out
end

-- plan_at returns the keys this worker must serve at now, in nginx's order (element 0 encrypts), as
-- {raw, id, state, not_before, encrypt_until, not_after} entries, and the next instant the plan changes.
-- A window without times is served in the file's order; a timed one on its schedule (schedule_at).
local function plan_at(w, now)
    local entries = {}
    if not w.timed then
        for i, raw in ipairs(w.keys) do
            entries[i] = { raw = raw, id = w.ids[i], state = i == 1 and "current" or "decrypt-only" }
        end
        return entries, nil, { source = "file order", exhausted = false }
    end
    local sched = schedule_at(w, now)
    local locals, err = local_keys(w, sched, now)
    if not locals then
        return nil, err
    end
    local function published(i)
        return { raw = w.keys[i], id = w.ids[i], state = sched.states[i], not_before = w.not_before[i],
            encrypt_until = math.min(w.encrypt_until[i], w.not_after[i]), not_after = w.not_after[i] }
    end
    local next_change = sched.next_change
    for _, lk in ipairs(locals) do
        local e = { raw = lk.raw, id = lk.id, state = "local", not_before = lk.created,
            not_after = lk.not_after }
        if lk.encrypting then
            table.insert(entries, 1, e)
        end
        if lk.not_after and (next_change == nil or lk.not_after < next_change) then
            next_change = lk.not_after
        end
    end
    for _, i in ipairs(sched.order) do
        entries[#entries + 1] = published(i)
    end
    for _, lk in ipairs(locals) do
        if not lk.encrypting then
            entries[#entries + 1] = { raw = lk.raw, id = lk.id, state = "local", not_before = lk.created,
                not_after = lk.not_after }
        end
    end
    sched.next_change = next_change
    return entries, nil, sched
end

-- events describes what the schedule did in (from, to]: activations, ends of encryption, not_afters.
local function events(w, from, to)
    if not w.timed or from == nil then
        return nil
    end
    local out = {}
    for i = 1, #w.keys do
        local stop = math.min(w.encrypt_until[i], w.not_after[i])
        for _, e in ipairs({ { w.not_before[i], "activated" }, { stop, "stopped encrypting" },
            { w.not_after[i], "reached its not_after (dropped)" } }) do
            if e[1] > from and e[1] <= to and not (e[2] == "stopped encrypting" and stop == w.not_before[i]) then
                out[#out + 1] = { at = e[1], text = fmt("key %s %s at %s (%d ms ago)", w.ids[i], e[2],
                    iso(e[1]), math.floor((to - e[1]) * 1000 + 0.5)) }
            end
        end
    end
    table.sort(out, function(a, b) return a.at < b.at end)
    local texts = {}
    for i, e in ipairs(out) do
        texts[i] = e.text
    end
    return #texts > 0 and concat(texts, "; ") or nil
end

-- scope_text names the scope being worked on for log lines ("" without start{ scopes }).
local function scope_text()
    if state.scoped == "scope" then
        return fmt(" of the scope of %s", state.file)
    elseif state.scoped == "rest" then
        return fmt(" matching no scope (top-level file %s)", state.file)
    end
    return ""
end

-- install writes the plan's keys into every TLS server block of this worker that belongs to the scope
-- being worked on (state).
local function install(entries)
    local found, derr = discover()
    if not found then
        return nil, derr
    end
    if not notes_logged then
        notes_logged = true
        for _, note in ipairs(found.notes) do
            ngx.log(ngx.WARN, LOG_PREFIX, note.text)
        end
        for _, t in ipairs(found.targets) do
            if t.scope == nil then
                ngx.log(ngx.NOTICE, LOG_PREFIX, fmt("%s server %d (%s) matches no scope of start{} and "
                    .. "there is no top-level file: left as nginx has it", t.kind, t.index, t.where))
            end
        end
    end
    local targets = {}
    for _, t in ipairs(found.targets) do
        if t.scope == state then
            targets[#targets + 1] = t
        end
    end
    if #targets == 0 then
        if state.scoped then
            return nil, fmt("no TLS server block with ssl_session_ticket_key placeholders belongs to the "
                .. "scope of %s in this worker: add the placeholder directives (see docs/nginx-lua.md)",
                state.file)
        end
        return nil, "no TLS server block with ssl_session_ticket_key placeholders in this worker: "
            .. "add the placeholder directives (see docs/nginx-lua.md)"
    end
    local raws = {}
    for i, e in ipairs(entries) do
        raws[i] = e.raw
    end
    -- Two phases, so that every block switches to the window or none does: first prepare every block
    -- (allocations), then switch them all.
    local prepared = {}
    for i, t in ipairs(targets) do
        local p, perr = prepare_window(found.kt, t.keys, raws)
        if not p then
            for _, q in ipairs(prepared) do
                discard_window(found.kt, q)
            end
            return nil, fmt("%s server %d: %s; no block changed (all blocks switch together or none "
                .. "does); retrying at the next check", t.kind, t.index, perr)
        end
        prepared[i] = p
    end
    local counts = { http = 0, stream = 0 }
    for i, t in ipairs(targets) do
        commit_window(found.kt, prepared[i], raws)
        counts[t.kind] = counts[t.kind] + 1
    end
    return { counts = counts, layout = found.layout }
end

local arm

-- sync installs the keys the followed window requires at this instant, when they differ from the
-- installed ones, and arms a timer for the next instant of its schedule. why says what brought the
-- change ("the window file changed", or nil for the schedule); by names the caller the status reports
-- for a switch ("schedule timer", "periodic check", "window file"). It returns true, or false and the
-- reason.
local function sync(why, by)
    local w = state.window
    if not w then
        return true
    end
    ngx.update_time()
    local now = ngx.now()
    local entries, perr, sched = plan_at(w, now)
    if not entries then
        return false, "cannot make a worker-local key for the exhausted schedule: " .. perr
    end
    state.schedule = sched
    local parts = {}
    for i, e in ipairs(entries) do
        parts[i] = e.raw
    end
    local sig = ngx.md5_bin(concat(parts))
    local from = state.evaluated_at
    state.evaluated_at = now
    if sig ~= state.installed_sig then
        local res, ierr = install(entries)
        if not res then
            state.evaluated_at = from -- report these events with the install that succeeds
            return false, ierr
        end
        local was = state.installed and state.installed[1].id
        state.installed_sig = sig
        state.installed = entries
        state.applied_at = now
        state.applies = state.applies + 1
        if was ~= entries[1].id then
            state.switched_at = now
            state.switched_by = by
        end
        local reason = why or events(w, from, now) or "on the schedule"
        if sched.exhausted then
            reason = reason .. "; no published key may encrypt (the schedule is exhausted: the window "
                .. "file brought no successor): a worker-local random key encrypts, tickets resume on "
                .. "this worker only until a window with a current key arrives"
        elseif sched.source == "clock behind" then
            reason = reason .. "; every key activates after this node's clock: the file's first key "
                .. "encrypts (is this clock behind Vault's?)"
        end
        local log = ngx.NOTICE
        if sched.exhausted and not (state.was_exhausted) then
            log = ngx.ERR
        end
        state.was_exhausted = sched.exhausted
        ngx.log(log, LOG_PREFIX, fmt("installed a window of %d keys of %d bytes (current id %s%s) into "
            .. "%d http and %d stream TLS server blocks%s (layout %s, worker pid %d); why: %s", #entries,
            w.size, entries[1].id, entries[1].state == "local" and ", worker-local" or "", res.counts.http,
            res.counts.stream, scope_text(), res.layout.name, ngx.worker.pid(), reason))
    end
    arm(sched.next_change)
    return true
end

-- on_instant runs sync for scope st at a schedule instant (arm's timer).
local function on_instant(premature, at, st)
    if premature or ngx.worker.exiting() then
        return
    end
    state = st
    if state.timer_at == at then
        state.timer_at = nil
    end
    local ok, res, err = pcall(sync, nil, "schedule timer")
    if not ok then
        log_failure("schedule timer failed: " .. tostring(res))
    elseif not res then
        log_failure(err .. "; keeping the installed keys")
    end
end

-- arm schedules one timer (ngx.timer.at) for the next instant of the schedule, unless one already
-- fires at or before it. A timer that fires early (nginx's cached clock) re-arms for the rest; the
-- periodic tick re-checks the schedule anyway, so a wall-clock jump is caught within one interval.
arm = function(at)
    if at == nil then
        return
    end
    local now = ngx.now()
    if state.timer_at and state.timer_at <= at and state.timer_at > now then
        return
    end
    local ok, err = ngx.timer.at(math.max(at - now, 0.001), on_instant, at, state)
    if not ok then
        log_failure("cannot arm the schedule timer for " .. iso(at) .. ": " .. tostring(err)
            .. "; the periodic check follows the schedule instead")
        return
    end
    state.timer_at = at
end

-- dict_key names a scope's entry in the shared dict: "window" (the last good window file content, raw
-- text that parsed), "window_md5" (its md5, checked every interval instead of copying the content out),
-- "window_at" (when it was stored, ngx.now()) and "placeholder" (this nginx start's placeholder key),
-- each followed by a space and the scope's window file: every window file, and so every trust domain,
-- has its own last good window and its own placeholder, and a reload that points a block at another
-- file never finds the old file's keys.
local function dict_key(what)
    return what .. " " .. state.file
end
local DICT_WINDOW, DICT_DIGEST, DICT_WINDOW_AT = "window", "window_md5", "window_at"
local DICT_PLACEHOLDER = "placeholder"

-- remember stores good window content in the shared dict, unless it already holds it, so that the
-- workers of a reload and respawned workers find the last good window when the file is bad then.
local function remember(content, digest)
    local dict = state.dict
    if not dict then
        return
    end
    if dict:get(dict_key(DICT_DIGEST)) == digest then
        return
    end
    local ok, err = dict:set(dict_key(DICT_WINDOW), content)
    if ok then
        ok, err = dict:set(dict_key(DICT_WINDOW_AT), ngx.now())
    end
    if ok then
        ok, err = dict:set(dict_key(DICT_DIGEST), digest)
    end
    local msg = not ok and fmt("cannot store the window in lua_shared_dict %s: %s; a reload or a "
        .. "respawned worker will not find it while the file is bad: enlarge the dict (1m holds any "
        .. "window)", state.dict_name, tostring(err)) or nil
    if msg and msg ~= state.dict_error then
        ngx.log(ngx.ERR, LOG_PREFIX, msg)
    end
    state.dict_error = msg
end

-- follow makes a parsed window the one this worker follows.
local function follow(window, digest, source)
    if not window.timed and not state.legacy_noted then
        state.legacy_noted = true
        ngx.log(ngx.WARN, LOG_PREFIX, fmt("%s has no times (an old window.ctmpl): the file's order "
            .. "decides which key encrypts, so keys switch only when Agent rewrites the file; install "
            .. "the current window.ctmpl to switch at the published instants without Agent", state.file))
    end
    state.window = window
    state.window_at = ngx.now()
    state.digest = digest
    state.source = source
end

-- read_file reads the window file and, when its content changed and is valid, makes it the window this
-- worker follows (and the shared dict's last good window). It returns true (and true as a third value
-- when the content changed), or false and why the file cannot be used (the worker then follows the
-- last good window: its own, or the shared dict's, see from_dict).
local function read_file()
    local path = state.file
    local f, oerr = io.open(path, "rb")
    if not f then
        return false, fmt("cannot read window file: %s", oerr)
    end
    local content = f:read(MAX_FILE_BYTES + 1)
    f:close()
    content = content or ""
    local digest = ngx.md5_bin(content)
    if digest == state.digest and state.source == "file" then
        state.bad_digest = nil
        remember(content, digest)
        return true
    end
    if digest == state.bad_digest then
        return false, state.bad_error
    end
    local window, perr = parse_window(content, path)
    if not window then
        state.bad_digest = digest
        state.bad_error = perr
        return false, perr
    end
    follow(window, digest, "file")
    state.bad_digest = nil
    remember(content, digest)
    return true, nil, true
end

-- from_dict follows the shared dict's last good window, when the file cannot be used and the dict holds
-- a window other than the one this worker follows (a new worker has none; an old one may have missed
-- the last good content another worker saw). It returns why it switched, or nil.
local function from_dict()
    local dict = state.dict
    if not dict then
        return nil
    end
    local content = dict:get(dict_key(DICT_WINDOW))
    if not content then
        return nil
    end
    local digest = ngx.md5_bin(content)
    if digest == state.digest then
        return nil
    end
    local name = "the last good window in lua_shared_dict " .. state.dict_name
    local window, perr = parse_window(content, name)
    if not window then
        ngx.log(ngx.ERR, LOG_PREFIX, perr, "; not using it")
        return nil
    end
    follow(window, digest, "shared_dict")
    local at = dict:get(dict_key(DICT_WINDOW_AT))
    return fmt("the window file cannot be used: installing the last good window from lua_shared_dict "
        .. "%s (stored %s by a worker of this nginx)", state.dict_name,
        at and fmt("%ds ago", math.floor(ngx.now() - at)) or "earlier")
end

-- install_placeholder installs, while no window can be (no good file, nothing in the shared dict), this
-- nginx start's random placeholder key: made by the first worker that needs it (RAND_bytes) and added
-- to the shared dict, where every other worker of this nginx finds it, so tickets resume across the
-- node's workers and reloads, and the key is new at every start of nginx (an empty dict). Without a
-- shared dict nginx keeps the placeholder key file's key. It returns true, or false and the reason.
local function install_placeholder()
    local dict = state.dict
    if not dict or state.placeholder then
        return true
    end
    local raw = dict:get(dict_key(DICT_PLACEHOLDER))
    if not raw then
        local r, rerr = random_key(80)
        if not r then
            return false, "cannot make this nginx start's placeholder key: " .. rerr
        end
        local ok, aerr = dict:add(dict_key(DICT_PLACEHOLDER), r)
        if not ok and aerr ~= "exists" then
            return false, fmt("cannot store this nginx start's placeholder key in lua_shared_dict %s: %s",
                state.dict_name, tostring(aerr))
        end
        raw = dict:get(dict_key(DICT_PLACEHOLDER)) -- another worker's, if it added first
        if not raw then
            return false, fmt("lua_shared_dict %s lost the placeholder key it was given: enlarge it",
                state.dict_name)
        end
    end
    local entries = { { raw = raw, id = hex(raw, 1, 16), state = "placeholder" } }
    local res, ierr = install(entries)
    if not res then
        return false, ierr
    end
    state.placeholder = true
    state.installed = entries
    state.installed_sig = ngx.md5_bin(raw)
    ngx.update_time()
    state.applied_at = ngx.now()
    state.applies = state.applies + 1
    ngx.log(ngx.NOTICE, LOG_PREFIX, fmt("no window to install: installed this nginx start's random "
        .. "placeholder key (id %s, shared by its workers through lua_shared_dict %s) into %d http and "
        .. "%d stream TLS server blocks%s (worker pid %d)", entries[1].id, state.dict_name, res.counts.http,
        res.counts.stream, scope_text(), ngx.worker.pid()))
    return true
end

-- refresh reads the window file (falling back to the shared dict's last good window), then installs
-- what the followed window's schedule requires now, or this start's placeholder when there is no
-- window. It returns true when the installed keys are the file's window at this instant, false and
-- every current cause otherwise (logged at error level, again every error_repeat seconds while the
-- same causes last; a change of cause is logged at once).
local function refresh()
    local fok, ferr, changed = read_file()
    local why = changed and "the window file changed" or nil
    if not fok then
        why = from_dict() or why
    end
    local sok, serr
    if state.window then
        sok, serr = sync(why, changed and "window file" or "periodic check")
        if sok then
            state.placeholder = false
        end
    else
        sok, serr = install_placeholder()
    end
    if fok and sok then
        state.last_error = nil
        state.last_error_at = nil
        return true
    end
    local causes = {}
    if not fok then
        causes[#causes + 1] = ferr
    end
    if not sok then
        causes[#causes + 1] = serr
    end
    local err = concat(causes, "; and ") .. "; keeping the installed keys"
    log_failure(err)
    return false, err
end
-- _M.refresh runs refresh for every scope of this worker (tests and fault hooks): true, or false and
-- the first failure.
function _M.refresh()
    local good, first = true, nil
    for _, st in ipairs(states) do
        state = st
        local ok, err = refresh()
        if not ok and good then
            good, first = false, err
        end
    end
    return good, first
end

-- tick is the periodic check: refresh for every scope of this worker.
local function tick(premature)
    if premature or ngx.worker.exiting() then
        return
    end
    for _, st in ipairs(states) do
        state = st
        local ok, err = pcall(refresh)
        if not ok then
            log_error("refresh failed: " .. tostring(err))
        end
    end
end

-- SCOPE_FIELDS are the fields a scopes[] entry may have.
local SCOPE_FIELDS = { server = true, file = true }

-- check_scopes validates start{}'s file and scopes options and returns the scopes as
-- {servers = {pattern...}, file = path} entries, or raises an error naming the field, the rule and the
-- value. A server pattern is a configuration file path ("/etc/nginx/sites-enabled/pay.conf": every
-- server{} block of that file) or a file and the line of a server{} block (".../www.conf:12"), as the
-- status reports a block's "where".
local function check_scopes(opts)
    local file, scopes = opts.file, opts.scopes
    if file ~= nil and (type(file) ~= "string" or file == "") then
        error(fmt("ticketkeys.start: file must be a non-empty path string, got %s", type(file)), 3)
    end
    if scopes == nil then
        if file == nil then
            error("ticketkeys.start: file must be a non-empty path string, got nil (or give scopes)", 3)
        end
        return {}
    end
    if type(scopes) ~= "table" or #scopes == 0 then
        error(fmt("ticketkeys.start: scopes must be a non-empty list like { { server = "
            .. "\"/etc/nginx/sites-enabled/pay.conf\", file = \"/var/lib/ticketkeys/nginx/pay.window\" } }, "
            .. "got %s", type(scopes) == "table" and "an empty table" or type(scopes)), 3)
    end
    local out, servers, files = {}, {}, {}
    if file then
        files[file] = "the top-level file option"
    end
    for i, sc in ipairs(scopes) do
        local name = fmt("scopes[%d]", i)
        if type(sc) ~= "table" then
            error(fmt("ticketkeys.start: %s must be a table { server = ..., file = ... }, got %s", name,
                type(sc)), 3)
        end
        for k in pairs(sc) do
            if not SCOPE_FIELDS[k] then
                error(fmt("ticketkeys.start: %s has an unknown field %q (want server and file)", name,
                    tostring(k)), 3)
            end
        end
        if type(sc.file) ~= "string" or sc.file == "" then
            error(fmt("ticketkeys.start: %s.file must be a non-empty path string (the scope's window "
                .. "file), got %s", name, type(sc.file)), 3)
        end
        if files[sc.file] then
            error(fmt("ticketkeys.start: %s.file %q is already the window file of %s: each trust domain has its "
                .. "own keyring, so two scopes never share a window file (list both servers in one "
                .. "scope instead)", name, sc.file, files[sc.file]), 3)
        end
        files[sc.file] = name
        local list = sc.server
        if type(list) == "string" then
            list = { list }
        end
        if type(list) ~= "table" or #list == 0 then
            error(fmt("ticketkeys.start: %s.server must be a configuration file path, a file:line of a "
                .. "server{} block, or a non-empty list of them, got %s", name, type(sc.server)), 3)
        end
        local patterns = {}
        for j, pat in ipairs(list) do
            local field = type(sc.server) == "table" and fmt("%s.server[%d]", name, j) or name .. ".server"
            if type(pat) ~= "string" or pat == "" or pat:find("^%s") or pat:find("%s$") then
                error(fmt("ticketkeys.start: %s must be a configuration file path or file:line without "
                    .. "surrounding spaces, got %s", field, type(pat) == "string" and fmt("%q", pat)
                    or type(pat)), 3)
            end
            if servers[pat] then
                error(fmt("ticketkeys.start: %s %q is also %s: a server belongs to one scope", field, pat,
                    servers[pat]), 3)
            end
            servers[pat] = field
            patterns[#patterns + 1] = pat
        end
        out[#out + 1] = { servers = patterns, file = sc.file, name = name }
    end
    return out
end

-- assign_scopes checks the scopes against this nginx's TLS server blocks (every server pattern matches
-- one at least, no block matches two scopes) and returns the rules scope_of follows, or raises an error.
-- When the blocks cannot be read (unknown layout), it returns the rules unchecked: nothing is written
-- anyway, and refresh logs why.
local function assign_scopes(scopes, sts, rest)
    local r = { where = {}, file = {}, rest = rest }
    for i, sc in ipairs(scopes) do
        for _, pat in ipairs(sc.servers) do
            if block_file(pat) then
                r.where[pat] = sts[i]
            else
                r.file[pat] = sts[i]
            end
        end
    end
    local found = discover()
    if not found then
        return r
    end
    local blocks = {}
    for _, t in ipairs(found.targets) do
        blocks[#blocks + 1] = t
    end
    for _, n in ipairs(found.notes) do
        blocks[#blocks + 1] = n
    end
    local used = {}
    for _, t in ipairs(blocks) do
        local by_where, file = r.where[t.where], block_file(t.where)
        local by_file = file and r.file[file]
        if by_where and by_file and by_where ~= by_file then
            error(fmt("ticketkeys.start: %s server %d (%s) matches %s (by file:line) and %s (by file): a "
                .. "block belongs to one scope", t.kind, t.server or t.index, t.where, by_where.name,
                by_file.name), 3)
        end
        if by_where then
            used[t.where] = true
        end
        if by_file then
            used[file] = true
        end
    end
    for _, sc in ipairs(scopes) do
        for _, pat in ipairs(sc.servers) do
            if not used[pat] then
                error(fmt("ticketkeys.start: %s.server %q matches no TLS server block of this nginx (a "
                    .. "block is named by its configuration file, or file:line, as the status "
                    .. "reports it in \"where\")", sc.name, pat), 3)
            end
        end
    end
    return r
end

-- start installs the window file(s) into this worker now and then checks them every interval seconds.
-- Call it from init_worker_by_lua*. Options:
--   file     path of the window file rendered by Vault Agent; readable by the worker user. Without
--            scopes it goes to every TLS server block; with scopes, to the blocks matching no scope.
--            Required unless scopes is given.
--   scopes   (optional) a list of { server = ..., file = ... }: the TLS server blocks named by server (a
--            configuration file path, or "file:line" of a server{} block, or a list of them) get the
--            window of file instead, with its own schedule, timers, last good window and placeholder.
--            Use one scope per trust domain (certificate and client-auth policy). A block matching no
--            scope gets the top-level file, or is left as nginx has it without one (noted once).
--   interval (optional) seconds between checks of the file; default 1, at least 0.1.
--   error_repeat (optional) seconds between repeats of a lasting failure at error level; default 60.
--   shared_dict (optional) name of a lua_shared_dict (1m is plenty) where the workers keep the last good
--            window, so that workers after a reload or a respawn install it while the file is bad or
--            unreadable, and this nginx start's random placeholder key, installed while there is no
--            window at all (both per window file). Without it such workers serve the placeholder key
--            file's key.
-- A configuration mistake raises an error (nginx logs it at worker start) before anything changes; a
-- bad file or an unknown nginx layout only logs and leaves nginx's keys in place.
function _M.start(opts)
    if type(opts) ~= "table" then
        error("ticketkeys.start: options must be a table like { file = \"/var/lib/ticketkeys/nginx/web.window\" }", 2)
    end
    local scopes = check_scopes(opts)
    local interval = opts.interval
    if interval == nil then
        interval = DEFAULT_INTERVAL
    end
    if type(interval) ~= "number" or interval < 0.1 or interval > 3600 then
        error(fmt("ticketkeys.start: interval must be a number of seconds from 0.1 to 3600, got %s",
            tostring(opts.interval)), 2)
    end
    local error_repeat = opts.error_repeat
    if error_repeat == nil then
        error_repeat = DEFAULT_ERROR_REPEAT
    end
    if type(error_repeat) ~= "number" or error_repeat < 1 or error_repeat > 86400 then
        error(fmt("ticketkeys.start: error_repeat must be a number of seconds from 1 to 86400, got %s",
            tostring(opts.error_repeat)), 2)
    end
    local dict_name = opts.shared_dict
    local dict
    if dict_name ~= nil then
        if type(dict_name) ~= "string" or dict_name == "" then
            error(fmt("ticketkeys.start: shared_dict must be the name of a lua_shared_dict, got %s",
                tostring(dict_name)), 2)
        end
        dict = ngx.shared[dict_name]
        if not dict then
            error(fmt("ticketkeys.start: no lua_shared_dict %q: declare `lua_shared_dict %s 1m;` in http{} "
                .. "(ticketkeys.conf does)", dict_name, dict_name), 2)
        end
    end
    local phase = ngx.get_phase()
    if phase ~= "init_worker" then
        error(fmt("ticketkeys.start must run in init_worker_by_lua*, not in phase %s", phase), 2)
    end
    -- A refused version or layout is not final for the timer: refresh reports it (install fails with
    -- the reason) and log_failure repeats it every error_repeat, so such a node never goes quiet.
    local layout, lerr = find_layout(ngx.config.nginx_version)
    if not PLATFORM then
        layout, lerr = nil, PLATFORM_ERR
    end
    local sts = {}
    for i, sc in ipairs(scopes) do
        sts[i] = new_state(sc.file, "scope")
        sts[i].servers, sts[i].name = sc.servers, sc.name
    end
    local rest
    if opts.file then
        rest = new_state(opts.file, #scopes > 0 and "rest" or nil)
        rest.name = "file"
        sts[#sts + 1] = rest
    end
    local r = assign_scopes(scopes, sts, rest)
    for _, st in ipairs(sts) do
        st.interval = interval
        st.error_repeat = error_repeat
        st.dict, st.dict_name = dict, dict_name
        st.layout = layout
        st.layout_err = lerr
    end
    rules, states = r, sts
    -- Synchronously: this worker accepts no connection before init_worker returns.
    for _, st in ipairs(states) do
        state = st
        local ok, err = pcall(refresh)
        if not ok then
            log_error("initial install failed: " .. tostring(err))
        end
    end
    local tok, terr = ngx.timer.every(interval, tick)
    if not tok then
        log_error("cannot start the refresh timer: " .. tostring(terr))
        return nil, terr
    end
    if not layout then
        return nil, lerr
    end
    return true
end

-- json encodes the small status tables (strings, numbers, booleans, arrays, maps) deterministically.
local function json(v)
    local t = type(v)
    if t == "nil" then
        return "null"
    elseif t == "boolean" then
        return v and "true" or "false"
    elseif t == "number" then
        if v == math.floor(v) and math.abs(v) < 2^53 then
            return fmt("%d", v)
        end
        return fmt("%.3f", v)
    elseif t == "string" then
        return '"' .. v:gsub('[%c"\\]', function(c)
            local m = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t', ['\r'] = '\\r' }
            return m[c] or fmt("\\u%04x", byte(c))
        end) .. '"'
    elseif t == "table" then
        if v[1] ~= nil or next(v) == nil and getmetatable(v) == _M.array_mt then
            local out = {}
            for i = 1, #v do
                out[i] = json(v[i])
            end
            return "[" .. concat(out, ",") .. "]"
        end
        local keys = {}
        for k in pairs(v) do
            keys[#keys + 1] = tostring(k)
        end
        table.sort(keys)
        local out = {}
        for _, k in ipairs(keys) do
            out[#out + 1] = json(k) .. ":" .. json(v[k])
        end
        return "{" .. concat(out, ",") .. "}"
    end
    return "null"
end
_M.array_mt = {}
_M._json = json

-- scope_view describes one scope of this worker for snapshot: its window file, where the followed
-- window came from, the schedule and the installed keys (ids and times, never material).
local function scope_view(st)
    local s = {
        file = st.file,
        applies = st.applies,
        applied_at = st.applied_at,
        last_error = st.last_error,
        source = st.placeholder and "placeholder" or st.source,
    }
    if st.servers then
        s.server = st.servers
    end
    local w = st.window
    if w then
        s.window_read_at = st.window_at
        if w.timed then
            local sc = st.schedule or {}
            s.follows = "schedule"
            s.follows_how = "this worker switches the encrypting key at each key's not_before and drops a key "
                .. "at its not_after by itself (nginx timers), whether or not Agent or Vault is reachable; "
                .. "the window file only brings new keys"
            s.exhausted = sc.exhausted or false
            s.current_by = sc.exhausted and "worker-local key (schedule exhausted)" or sc.source
            s.next_change_at = iso(sc.next_change)
            s.switched_at = st.switched_at
            s.switched_by = st.switched_by
            s.evaluated_at = st.evaluated_at
        else
            s.follows = "file order"
            s.follows_how = "the window file has no times (an old window.ctmpl): its first key encrypts "
                .. "until Agent rewrites the file; install the current window.ctmpl to follow the schedule"
        end
        local keys = setmetatable({}, _M.array_mt)
        for _, e in ipairs(st.installed or {}) do
            keys[#keys + 1] = { id = e.id, state = e.state, not_before = iso(e.not_before),
                encrypt_until = iso(e.encrypt_until), not_after = iso(e.not_after) }
        end
        s.window = keys
    end
    return s
end

-- snapshot returns this worker's view: the layout, the file state and, for each TLS server block with a
-- key array, its scope (window file) and the ids (hex key names) and states of the keys nginx holds now,
-- read from nginx's memory. Element 0 is "current" (encrypts and decrypts); the others are
-- "decrypt-only". The top-level fields describe the top-level file; with start{ scopes }, "scopes"
-- describes each scope the same way. Never key material.
function _M.snapshot()
    local s = {}
    local top = rules and rules.rest
    if top then
        s = scope_view(top)
    end
    s.pid = ngx.worker.pid()
    s.worker = ngx.worker.id()
    s.nginx_version = version_string(ngx.config.nginx_version)
    s.shared_dict = states[1] and states[1].dict_name
    s.blocks = setmetatable({}, _M.array_mt)
    s.skipped = setmetatable({}, _M.array_mt)
    if #states > 0 and states[1].scoped then
        s.scopes = setmetatable({}, _M.array_mt)
        for _, st in ipairs(states) do
            if st.scoped == "scope" then
                s.scopes[#s.scopes + 1] = scope_view(st)
            end
        end
    end
    local found, err = discover()
    if not found then
        s.layout_error = err
        return s
    end
    s.layout = found.layout.name
    local kt = found.kt
    for _, note in ipairs(found.notes) do
        s.skipped[#s.skipped + 1] = { kind = note.kind, server = note.server, where = note.where,
            reason = note.reason }
    end
    for _, t in ipairs(found.targets) do
        local keys = setmetatable({}, _M.array_mt)
        local k = ffi.cast(kt.ptr, t.keys.elts)
        for i = 0, tonumber(t.keys.nelts) - 1 do
            local name = ffi.string(k[i].name, 16)
            local size = key_size(kt, t.keys.elts, i)
            keys[#keys + 1] = {
                id = hex(name, 1, 16),
                state = i == 0 and "current" or "decrypt-only",
                size = size,
            }
        end
        s.blocks[#s.blocks + 1] = {
            kind = t.kind,
            server = t.index,
            where = t.where,
            scope = t.scope and t.scope.file,
            capacity = tonumber(t.keys.nalloc),
            keys = keys,
        }
    end
    return s
end

-- status is a content handler for operators: it prints snapshot() as JSON. It is off unless a location
-- calls it, e.g.
--     location = /ticketkeys/status { allow 127.0.0.1; deny all;
--         content_by_lua_block { require("resty.ticketkeys").status() } }
-- The answer describes only the worker that served the request.
function _M.status()
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say(json(_M.snapshot()))
end

return _M
