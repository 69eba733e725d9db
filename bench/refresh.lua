-- wrk script (refresh): cookie GETs that take their cookie in turn from a
-- file of sessions, one Cookie value a line (the path after "--"). The
-- requests in flight at once then hold different sessions: tokenjar makes
-- concurrent requests of one session share one refresh, and the scenario
-- wants each request to make its own (the worst case).
local requests = {}
local count, next_one = 0, 0

function init(args)
    for line in io.lines(args[1]) do
        count = count + 1
        -- Built once here: formatting a request on every call would slow
        -- wrk, which shares its core with the upstream.
        requests[count] = wrk.format(nil, nil, { Cookie = line })
    end
    if count == 0 then
        error("refresh.lua: no sessions in " .. args[1])
    end
end

function request()
    next_one = next_one % count + 1
    return requests[next_one]
end
