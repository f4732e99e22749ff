-- windowcheck.lua runs resty.ticketkeys' own window parser (_parse_window) and schedule rule
-- (_schedule_at) under a plain LuaJIT, outside nginx, over a batch of window files. The
-- schedule-invariants harness (history_test.go, issue 18) writes every nginx-format window a generated
-- history serves, rendered as bootstrap/agent/nginx-lua/window.ctmpl renders it, and compares the answer
-- with the schedule package.
--
-- Usage: luajit windowcheck.lua LIBDIR BATCHFILE
--   LIBDIR is nginx/lib (the lua_package_path root of resty.ticketkeys).
--   BATCHFILE holds records "W <lines> <unix,unix,...>\n" followed by that many window lines.
-- Output: one line per record, in order: "ok <id>,<id>,..." (the encrypting key's id at each instant, "-"
-- when none encrypts) or "error <the module's error>". The module's errors never hold key material, and
-- neither does this output (key ids are public: every ticket carries its key's name).
--
-- The module reads only ngx.decode_base64 while parsing (the rest of ngx serves its workers). Outside
-- nginx, decode_base64 below follows ngx_decode_base64 (src/core/ngx_string.c), which
-- lua-nginx-module's ngx.decode_base64 calls: it decodes the leading run of alphabet characters (padding
-- and anything after it are ignored), refuses a run whose length is 1 mod 4, and returns nil then. The
-- module checks the line's characters itself before calling it.

local libdir, batch = arg[1], arg[2]
if not libdir or not batch then
    io.stderr:write("usage: luajit windowcheck.lua LIBDIR BATCHFILE\n")
    os.exit(2)
end
package.path = libdir .. "/?.lua;" .. package.path

local bit = require "bit"
local band, bor, lshift, rshift = bit.band, bit.bor, bit.lshift, bit.rshift
local char, byte = string.char, string.byte

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local VALUE = {}
for i = 1, #ALPHABET do
    VALUE[byte(ALPHABET, i)] = i - 1
end

local function decode_base64(s)
    local n = 0
    while n < #s and VALUE[byte(s, n + 1)] do
        n = n + 1
    end
    if n % 4 == 1 then
        return nil
    end
    local out = {}
    local i = 1
    while i + 3 <= n do
        local v = bor(lshift(VALUE[byte(s, i)], 18), lshift(VALUE[byte(s, i + 1)], 12),
            lshift(VALUE[byte(s, i + 2)], 6), VALUE[byte(s, i + 3)])
        out[#out + 1] = char(rshift(v, 16), band(rshift(v, 8), 0xff), band(v, 0xff))
        i = i + 4
    end
    local rest = n - i + 1
    if rest == 2 then
        local v = bor(lshift(VALUE[byte(s, i)], 18), lshift(VALUE[byte(s, i + 1)], 12))
        out[#out + 1] = char(rshift(v, 16))
    elseif rest == 3 then
        local v = bor(lshift(VALUE[byte(s, i)], 18), lshift(VALUE[byte(s, i + 1)], 12),
            lshift(VALUE[byte(s, i + 2)], 6))
        out[#out + 1] = char(rshift(v, 16), band(rshift(v, 8), 0xff))
    end
    return table.concat(out)
end

ngx = { decode_base64 = decode_base64 }
local tk = require "resty.ticketkeys"

local f = assert(io.open(batch, "rb"))
local out = {}
while true do
    local header = f:read("*l")
    if header == nil then
        break
    end
    local count, ats = header:match("^W (%d+) ([%d,]*)$")
    if not count then
        io.stderr:write("windowcheck: bad record header (want \"W <lines> <unix,...>\")\n")
        os.exit(2)
    end
    local lines = {}
    for i = 1, tonumber(count) do
        lines[i] = assert(f:read("*l"), "windowcheck: batch file ends inside a record") .. "\n"
    end
    local w, err = tk._parse_window(table.concat(lines), "window")
    if not w then
        out[#out + 1] = "error " .. err
    elseif not w.timed then
        out[#out + 1] = "error the window has no times (the module would serve it in file order)"
    else
        local picks = {}
        for at in ats:gmatch("%d+") do
            local r = tk._schedule_at(w, tonumber(at))
            picks[#picks + 1] = r.current and w.ids[r.current] or "-"
        end
        out[#out + 1] = "ok " .. table.concat(picks, ",")
    end
end
f:close()
io.write(table.concat(out, "\n"), "\n")
