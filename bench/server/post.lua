-- POST /predict for wrk, one body per request from a file, and one JSON line of results at the end.
--
--   wrk -t1 -c32 -d30s --timeout 60s -s bench/server/post.lua http://127.0.0.1:8000 -- BODIES [OPTION...]
--
-- BODIES: a file with one JSON request body per line (each thread starts at a different one).
-- Options, NAME=VALUE:
--   delay=MS    wait about MS milliseconds before each request of a connection (uniformly 0.5 to 1.5
--               times MS, so that connections do not send in step); holds a rate below capacity
--   free=N      the first N requests of a thread go without that delay (each connection's first)
--   stop=N      a thread stops after N answers (with -c1: exactly N requests, one after another)
--   statuses=0  do not count answers by status (wrk then need not hand each response to Lua)
-- The last line wrk prints is {"wrk": ...}: seconds, requests, answers by status, socket errors and
-- latency percentiles in milliseconds (of every answer, whatever its status).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do
    if #line > 0 then
      bodies[#bodies + 1] = line
    end
  end
  assert(#bodies > 0, "no request bodies in " .. args[1])
  local options = {}
  for i = 2, #args do
    local name, value = string.match(args[i], "^(%w+)=(.*)$")
    assert(name, "an option is NAME=VALUE, not " .. args[i])
    options[name] = value
  end
  math.randomseed(os.time() + #threads)
  counter = math.random(#bodies)
  statuses = {}
  answered = 0
  sent = 0
  local delay_ms = tonumber(options.delay or "0")
  local free = tonumber(options.free or "0")
  local stop_after = tonumber(options.stop or "0")
  wrk.method = "POST"
  wrk.path = "/predict"
  wrk.headers["Content-Type"] = "application/json"
  -- wrk looks for delay() and response() after the first thread's init: define only what is asked for
  if delay_ms > 0 then
    delay = function()
      sent = sent + 1
      if sent <= free then
        return 0
      end
      return math.floor(delay_ms * (0.5 + math.random()))
    end
  end
  if options.statuses ~= "0" or stop_after > 0 then
    response = function(status)
      statuses[status] = (statuses[status] or 0) + 1
      answered = answered + 1
      if stop_after > 0 and answered >= stop_after then
        wrk.thread:stop()
      end
    end
  end
end

function request()
  counter = counter % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[counter])
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', status, count)
  end
  local errors = summary.errors
  local function ms(microseconds)
    return microseconds / 1000
  end
  io.write(string.format(
    '{"wrk": {"seconds": %.6f, "requests": %d, "statuses": {%s}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_ms": {"p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f, "mean": %.3f}}}\n',
    summary.duration / 1e6, summary.requests, table.concat(parts, ", "),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency.max), ms(latency.mean)
  ))
end
