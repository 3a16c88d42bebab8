-- bench/e2e_step.lua: the wrk script of bench/e2e.
--
-- wrk has no per-connection hook, so bench/e2e runs one connection per wrk thread
-- (-t C -c C): each thread's Lua state is then one connection's, and holds one session.
-- setup() numbers the threads 1..C; init() reads the thread's arguments. (wrk runs each
-- thread's init() before the next thread's setup(), so the thread count comes as an
-- argument.)
--
-- step mode: every request steps the thread's own session by one vector, over keep-alive.
--   wrk -t C -c C -d 10s -s bench/e2e_step.lua URL -- step IDS_FILE BODY_FILE
--   IDS_FILE: one session id per line (line k for thread k); BODY_FILE: the request body.
--   The request never changes: it is formatted once per thread, and no response() is
--   defined in this mode, so wrk does not hand the response bodies to Lua.
--
-- fill mode: each thread creates sessions and steps each once (so its state is written),
-- alternating create and step on one connection, until it has made its share of TOTAL;
-- then it stops. bench/e2e interrupts wrk once the server counts TOTAL sessions.
--   wrk -t N -c N -d 600s -s bench/e2e_step.lua URL -- fill MODEL TOTAL N BODY_FILE
-- fork mode: the same arguments; each thread creates one session, steps it once, then
-- forks it (POST /v1/sessions/{id}/fork: a new session with a copy of the state, so the
-- copy is written too) until its share of TOTAL sessions, the first one included, exists.
-- No JSON numbers travel, so it fills far faster than fill mode.
--
-- done() prints one JSON line starting `E2E_JSON ` with the counts and the latency
-- percentiles in microseconds.

local counter = 0
local threads = {}

function setup(thread)
    counter = counter + 1
    thread:set("index", counter)
    table.insert(threads, thread)
end

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

-- args[0] is the URL; the script's own arguments follow.
function init(args)
    mode = args[1]
    failures = 0
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    if mode == "step" then
        local k = 0
        for line in io.lines(args[2]) do
            k = k + 1
            if k == index then
                wrk.path = "/v1/sessions/" .. line .. "/step"
            end
        end
        assert(k >= index, "fewer session ids than threads")
        req = wrk.format(nil, nil, nil, slurp(args[3]))
    elseif mode == "fill" or mode == "fork" then
        local total, nthreads = tonumber(args[3]), tonumber(args[4])
        -- this thread's share of TOTAL, the remainder to the first threads
        quota = math.floor(total / nthreads) + ((index <= total % nthreads) and 1 or 0)
        create_body = '{"model":"' .. args[2] .. '"}'
        step_body = slurp(args[5])
        done_count = 0
        pending = nil       -- id of the session created and not stepped yet
        seed = nil          -- fork mode: the stepped session that is forked
        last = nil          -- what the request in flight was
        response = fill_response    -- only fill mode needs the responses
    else
        error("mode must be step, fill or fork")
    end
end

-- wrk decides from the setup state (where init() never runs) whether request() exists, and
-- calls it there once to check it returns a request: hence the mode == nil case.
function request()
    if mode == "step" then
        return req
    elseif mode == nil then
        return wrk.format()
    end
    if pending then
        last = "step"
        return wrk.format("POST", "/v1/sessions/" .. pending .. "/step", nil, step_body)
    elseif seed then
        last = "fork"
        return wrk.format("POST", "/v1/sessions/" .. seed .. "/fork", nil, "{}")
    end
    last = "create"
    return wrk.format("POST", "/v1/sessions", nil, create_body)
end

function fill_response(status, headers, body)
    if last == "create" then
        if status == 201 then
            pending = body:match('"id"%s*:%s*"(%x+)"')
        else
            failures = failures + 1
        end
    elseif last == "step" then
        if status == 200 then
            done_count = done_count + 1
            if mode == "fork" then
                seed = pending
            end
        else
            failures = failures + 1
        end
        pending = nil
    elseif status == 201 then
        done_count = done_count + 1
    else
        failures = failures + 1
    end
    if done_count >= quota or failures > 100 then
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    local filled, failed = 0, 0
    for _, t in ipairs(threads) do
        filled = filled + (t:get("done_count") or 0)
        failed = failed + (t:get("failures") or 0)
    end
    local e = summary.errors
    local p = {}
    for _, q in ipairs({50, 90, 99, 99.9}) do
        table.insert(p, string.format('"%s":%d', tostring(q), latency:percentile(q)))
    end
    io.write(string.format(
        'E2E_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,%s},' ..
        '"threads":%d,"filled":%d,"fill_failures":%d}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.min, latency.mean, latency.max, latency.stdev, table.concat(p, ","),
        counter, filled, failed))
end
